"""How well the output watermark survives, how often it fires on audio gsvkit did not make, and what it costs.

    python benchmarks/corpus/build_corpus.py --out /tmp/corpus --sentences 15     # 14 free voices x 15 sentences
    python benchmarks/watermark.py /tmp/corpus [--marked 100] [--tts 20] [--json out.json]

- Marked clips: the first `--marked` corpus clips (speakers in turn), resampled to 32 kHz (the s2 output rate),
  cut to at most 10 s, and marked with `Watermarker.apply`, the function every output path calls.
- TTS outputs: `--tts` syntheses of tiny random models through `TTS` (watermark on), reference-free from corpus
  clips; the same seeds with `watermark=False` give the unmarked twins for the mel cost (their noise-like audio has
  no speech for a speaker encoder, so speaker similarity is measured on the marked corpus clips only).
- Conditions: 16-bit wav, ogg/vorbis, ogg/opus (48 kHz), mp3, resampled to 16 kHz, white noise at 20 dB SNR.
- False positives: every corpus clip, unmarked, under every condition.
- Rates at the default threshold (`WATERMARK_THRESHOLD`, 0.35) and at 0.25 (`gsv detect --threshold 0.25`).
- Cost: log-mel L1 (gsvkit's `eval.mel`, same frames) and resemblyzer speaker similarity of marked vs unmarked, and
  the seconds `apply` takes per second of audio.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from gsvkit.safety import WATERMARK_THRESHOLD

SR = 32000
THRESHOLDS = (WATERMARK_THRESHOLD, 0.25)  # the default, and a lower one for noisy channels (`gsv detect --threshold`)


def _codec(x: np.ndarray, sr: int, fmt: str, subtype: str, rate: int | None = None) -> tuple[np.ndarray, int]:
    from gsvkit.audio.io import resample

    if rate and rate != sr:
        x, sr = resample(x, sr, rate), rate
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), sr, format=fmt, subtype=subtype)
    buf.seek(0)
    y, sr2 = sf.read(buf, dtype="float32")
    return (y.mean(axis=1) if y.ndim > 1 else y), sr2


def _noise(x: np.ndarray, sr: int, seed: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(x.size).astype(np.float32)
    n *= np.sqrt(np.mean(x**2) / np.mean(n**2) / 10 ** (20 / 10))  # 20 dB below the signal's power
    return x + n, sr


def conditions() -> dict:
    from gsvkit.audio.io import resample

    return {
        "wav": lambda x, sr, i: _codec(x, sr, "WAV", "PCM_16"),
        "ogg/vorbis": lambda x, sr, i: _codec(x, sr, "OGG", "VORBIS"),
        "ogg/opus": lambda x, sr, i: _codec(x, sr, "OGG", "OPUS", 48000),
        "mp3": lambda x, sr, i: _codec(x, sr, "MP3", "MPEG_LAYER_III"),
        "16 kHz": lambda x, sr, i: (resample(x, sr, 16000), 16000),
        "noise 20 dB": lambda x, sr, i: _noise(x, sr, i),
    }


def corpus_clips(root: Path) -> list[Path]:
    """Clips of corpus.list, speakers taken in turn so that any prefix mixes every voice."""
    by_speaker: dict[str, list[Path]] = {}
    for line in (root / "corpus.list").read_text(encoding="utf-8").splitlines():
        if line.strip():
            path, speaker = line.split("|")[:2]
            by_speaker.setdefault(speaker, []).append(root / path)
    out, lists = [], list(by_speaker.values())
    for i in range(max(map(len, lists))):
        out += [lst[i] for lst in lists if i < len(lst)]
    return out


def tiny_tts(tmp: Path):
    import torch

    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import load_config
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.s2 import SynthesizerTrn

    configs = Path(__file__).resolve().parent.parent / "configs" / "tiny"
    c1, c2 = load_config(configs / "s1.yaml"), load_config(configs / "s2.yaml")
    torch.manual_seed(0)
    save_checkpoint(tmp / "s1.safetensors", Text2SemanticDecoder(c1.model).state_dict(), c1, {})
    save_checkpoint(tmp / "s2.safetensors", SynthesizerTrn(c2.model).state_dict(), c2, {})
    return tmp / "s1.safetensors", tmp / "s2.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="a folder written by benchmarks/corpus/build_corpus.py")
    ap.add_argument("--marked", type=int, default=100, help="corpus clips to mark")
    ap.add_argument("--tts", type=int, default=20, help="tiny-model syntheses to mark")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    import tempfile

    import torch

    from gsvkit.audio.io import read_audio, resample
    from gsvkit.eval.mel import log_mel
    from gsvkit.eval.similarity import speaker_similarity
    from gsvkit.safety.watermark import get_watermarker

    torch.set_num_threads(1)
    wm = get_watermarker()
    conds = conditions()
    clips = corpus_clips(args.corpus)
    clean = []
    for p in clips:
        wav, sr = read_audio(p)
        clean.append(resample(wav, sr, SR)[: 10 * SR])
    print(f"{len(clips)} corpus clips, {sum(map(len, clean)) / SR / 60:.1f} min; watermark {wm.model_id}")

    marked, apply_s, audio_s, mel_d, sim = [], 0.0, 0.0, [], []
    for x in clean[: args.marked]:
        t = time.perf_counter()
        y = wm.apply(x, SR)
        apply_s += time.perf_counter() - t
        audio_s += x.size / SR
        marked.append((y, SR))
        mel_d.append(float(np.abs(log_mel(y) - log_mel(x)).mean()))
        sim.append(speaker_similarity(y, x, sr=SR))

    tts_marked, tts_mel = [], []
    if args.tts:
        from gsvkit.inference.pipeline import TTS

        with tempfile.TemporaryDirectory() as tmp:
            s1, s2 = tiny_tts(Path(tmp))
            log = Path(tmp) / "audit.jsonl"
            on = TTS(s1=s1, s2=s2, audit_log=log)
            off = TTS(s1=s1, s2=s2, audit_log=log, watermark=False)
            refs = [p for p, x in zip(clips, clean, strict=True) if 3 * SR <= x.size < 10 * SR]  # 3-10 s references
            for i in range(args.tts):
                kw = {"ref_audio": refs[i % len(refs)], "ref_text": "", "seed": i, "max_new_tokens": 100,
                      "consent": "benchmark: engine voice, no person"}  # fmt: skip
                r_on = on.synthesize_result("A sentence for the watermark benchmark.", "en", **kw)
                r_off = off.synthesize_result("A sentence for the watermark benchmark.", "en", **kw)
                tts_marked.append((r_on.audio, r_on.sample_rate))
                a, b = resample(r_on.audio, r_on.sample_rate, SR), resample(r_off.audio, r_off.sample_rate, SR)
                tts_mel.append(float(np.abs(log_mel(a) - log_mel(b)).mean()))
                # (no speaker similarity here: tiny random models do not produce speech a speaker encoder accepts)

    def scores(items: list[tuple[np.ndarray, int]], cond) -> np.ndarray:
        return np.array([wm.detect(*cond(x, sr, i)).score for i, (x, sr) in enumerate(items)])

    rows = []
    for name, cond in conds.items():
        s_marked, s_clean = scores(marked, cond), scores([(x, SR) for x in clean], cond)
        s_tts = scores(tts_marked, cond) if tts_marked else None
        row = {"condition": name}
        for t in THRESHOLDS:
            row[f"detected_marked@{t}"] = float(np.mean(s_marked >= t))
            row[f"detected_tts@{t}"] = float(np.mean(s_tts >= t)) if s_tts is not None else None
            row[f"false_positive@{t}"] = float(np.mean(s_clean >= t))
        row["clean_score_max"] = float(s_clean.max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    figures = {
        "clips": len(clips),
        "marked": len(marked),
        "tts": len(tts_marked),
        "conditions": rows,
        "cost": {
            "mel_l1_marked_vs_clean": float(np.mean(mel_d)),
            "speaker_similarity_marked_vs_clean": float(np.mean(sim)),
            "speaker_similarity_min": float(np.min(sim)),
            "tts_mel_l1_on_vs_off": float(np.mean(tts_mel)) if tts_mel else None,
            "apply_seconds_per_audio_second": apply_s / audio_s,
        },
    }
    for t in THRESHOLDS:
        print(f"\nthreshold {t}:")
        print("| condition | detected (marked corpus clips) | detected (tiny-model TTS) | false positives (clean) |")
        print("|---|---|---|---|")
        for r in rows:
            tts = f"{r[f'detected_tts@{t}']:.1%}" if r[f"detected_tts@{t}"] is not None else "-"
            print(f"| {r['condition']} | {r[f'detected_marked@{t}']:.1%} | {tts} | {r[f'false_positive@{t}']:.1%} |")
    print(json.dumps(figures["cost"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
