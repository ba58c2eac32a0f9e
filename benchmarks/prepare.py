"""Seconds of `gsv prepare` processing per minute of audio, per stage, with official-size models on this machine.

The HuBERT (chinese-hubert-base size: 768 wide, 12 layers) and s2 (official v2 size) weights are random: speed
does not depend on the values. The audio is generated speech-like sound (voiced syllables between pauses), one
long recording to slice plus transcribed clips; the text stage uses the real English frontend.

    python benchmarks/prepare.py [--minutes 2] [--threads 2] [--device cpu]

Model loading is timed separately from the per-item work.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def speech(seconds: float, sr: int, f0: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    env = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.15 * env * x + 0.005 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


def make_audio(folder: Path, minutes: float) -> float:
    """Half the audio as one long recording (sliced), half as 4-8 s transcribed clips; returns seconds."""
    import soundfile as sf

    sr, rng = 44100, np.random.default_rng(0)
    parts, total = [], 0.0
    while total < minutes * 30:
        d = float(rng.uniform(3, 9))
        parts += [speech(d, sr, float(rng.uniform(100, 220)), len(parts)), np.zeros(int(0.6 * sr), np.float32)]
        total += d + 0.6
    sf.write(folder / "long.wav", np.concatenate(parts), sr)
    done, i = 0.0, 0
    while done < minutes * 30:
        d = float(rng.uniform(4, 8))
        sf.write(folder / f"clip{i:03d}.flac", speech(d, 32000, float(rng.uniform(100, 220)), 1000 + i), 32000)
        (folder / f"clip{i:03d}.txt").write_text("the quick brown fox jumps over the lazy dog", encoding="utf-8")
        done, i = done + d, i + 1
    return total + done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from transformers import HubertConfig, HubertModel

    from gsvkit.audio.features import HubertFeaturizer
    from gsvkit.checkpoint import load_s2, save_checkpoint
    from gsvkit.config import official_config
    from gsvkit.data.prepare import prepare
    from gsvkit.data.prepare_config import PrepareConfig
    from gsvkit.data.stages import frontend_text_fn
    from gsvkit.models.s2 import SynthesizerTrn

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        seconds = make_audio(root / "in", args.minutes)
        torch.manual_seed(0)
        HubertModel(HubertConfig()).save_pretrained(root / "hubert")
        s2_cfg = official_config("s2", "v2")
        save_checkpoint(root / "s2.safetensors", SynthesizerTrn(s2_cfg.model).state_dict(), s2_cfg, {})

        loads = {}
        t = time.perf_counter()
        featurizer = HubertFeaturizer(root / "hubert", device=args.device)
        loads["hubert"] = time.perf_counter() - t
        t = time.perf_counter()
        quantizer = load_s2(root / "s2.safetensors", device=args.device)
        loads["s2"] = time.perf_counter() - t
        t = time.perf_counter()
        text_fn = frontend_text_fn("v2")
        text_fn("warm up the english frontend", "en")
        loads["text frontend"] = time.perf_counter() - t

        cfg = PrepareConfig(
            inputs=[str(root / "in")],
            out=str(root / "ds"),
            hubert=str(root / "hubert"),
            s2=str(root / "s2.safetensors"),
            device=args.device,
        )
        t = time.perf_counter()
        result = prepare(
            cfg, text_fn=text_fn, featurizer=featurizer, quantizer=quantizer, transcriber=lambda w, lang: "hello world"
        )
        wall = time.perf_counter() - t
        t = time.perf_counter()
        rerun = prepare(cfg, text_fn=text_fn, featurizer=featurizer, quantizer=quantizer)
        rerun_wall = time.perf_counter() - t

    minutes = seconds / 60
    print(f"audio: {minutes:.2f} min in {len(result.items)} utterances; torch threads {args.threads}, {args.device}")
    print("model loading (s): " + ", ".join(f"{k} {v:.1f}" for k, v in loads.items()))
    print(f"{'stage':<10}{'items':>7}{'seconds':>10}{'s per audio minute':>22}")
    for stage, secs in result.report.seconds.items():
        print(f"{stage:<10}{result.report.computed.get(stage, 0):>7}{secs:>10.2f}{secs / minutes:>22.2f}")
    print(f"{'total':<10}{'':>7}{wall:>10.2f}{wall / minutes:>22.2f}")
    print(f"rerun with nothing to do: {rerun_wall:.2f} s, computed {dict(rerun.report.computed) or 'nothing'}")


if __name__ == "__main__":
    main()
