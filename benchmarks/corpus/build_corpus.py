#!/usr/bin/env python3
"""Build a free, multi-speaker English speech corpus from Debian's text-to-speech voices.

Every speaker (an engine voice) reads its own sentences: no sentence is spoken by two speakers, so a model
cannot learn a sentence from one speaker and be scored on it with another. Output::

    OUT/
      wavs/<speaker>/<speaker>_0000.wav   mono 16-bit PCM at the engine's rate (or --sample-rate)
      corpus.list                         upstream .list: wavs/<speaker>/<file>.wav|<speaker>|EN|<text>
      speakers.json                       per speaker: engine, voice, human, gender, rate, count, seconds;
                                          "humans": which speakers are the same recorded person
      train.list, heldout.list            only with --hold-out HUMAN...: every speaker of those humans
                                          (across engines) goes to heldout.list

Paths in the lists are relative to OUT. Runs are resumable: existing wav files are kept.

    python benchmarks/corpus/build_corpus.py --out corpus --sentences 50
    python benchmarks/corpus/build_corpus.py --out quick --sentences 2 --voices flite_slt espeak_enus_m3
    python benchmarks/corpus/build_corpus.py --out full --sentences 200 --non-free --hold-out slt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import texts
import voices


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, help="output directory (required unless --list-voices)")
    p.add_argument("--sentences", "-n", type=int, default=50, help="sentences per speaker (default 50)")
    p.add_argument("--voices", nargs="+", help="speaker ids to render (default: every free voice installed)")
    p.add_argument("--non-free", action="store_true", help="also use the non-free voices (RHVoice, pico, mbrola)")
    p.add_argument("--hold-out", nargs="*", default=[], metavar="HUMAN",
                   help="humans whose every engine voice goes to heldout.list (e.g. slt)")
    p.add_argument("--sample-rate", type=int, help="resample everything to this rate (default: keep the engine's)")
    p.add_argument("--seed", type=int, default=0, help="sentence shuffling seed")
    p.add_argument("--jobs", "-j", type=int, default=min(4, os.cpu_count() or 1), help="parallel renders")
    p.add_argument("--list-voices", action="store_true", help="print the known voices and exit")
    p.add_argument("--strict", action="store_true", help="fail when a chosen voice is not installed")
    return p.parse_args(argv)


def finish_wav(path: Path, sample_rate: int | None) -> tuple[int, float]:
    """Make the engine's file mono 16-bit PCM (resampled if asked); return (rate, seconds)."""
    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    wav = wav.mean(axis=1)
    if sample_rate and sample_rate != sr:
        import soxr

        wav, sr = soxr.resample(wav, sr, sample_rate).astype(np.float32), sample_rate
    if not np.abs(wav).max() > 1e-4:
        raise RuntimeError(f"{path}: the engine produced silence")
    tmp = path.with_suffix(".tmp.wav")
    sf.write(str(tmp), np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16")
    os.replace(tmp, path)
    return sr, len(wav) / sr


def list_line(rel_path: str, speaker: str, text: str) -> str:
    return f"{rel_path}|{speaker}|EN|{text}"


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build(args: argparse.Namespace) -> dict:
    chosen = voices.select(args.voices, args.non_free)
    usable = []
    for spec in chosen:
        missing = voices.available(spec)
        if missing:
            if args.strict or args.voices:
                raise SystemExit(f"{spec.name}: {missing} (run benchmarks/corpus/install.sh)")
            print(f"skipping {spec.name}: {missing}", file=sys.stderr)
        else:
            usable.append(spec)
    if not usable:
        raise SystemExit("no voice available; run benchmarks/corpus/install.sh")

    pool = texts.sentence_pool(args.seed)
    # Speakers take consecutive slices of the pool in the fixed order of voices.VOICES, so a speaker's
    # sentences do not change when other voices are added or left out.
    order = [v.name for v in voices.VOICES]
    need = (max(order.index(v.name) for v in usable) + 1) * args.sentences
    if need > len(pool):
        raise SystemExit(f"only {len(pool)} sentences available, {need} needed; lower --sentences")
    jobs = []
    for spec in usable:
        start = order.index(spec.name) * args.sentences
        for i, text in enumerate(pool[start:start + args.sentences]):
            rel = f"wavs/{spec.name}/{spec.name}_{i:04d}.wav"
            jobs.append((spec, text, rel))

    out: Path = args.out
    for spec in usable:
        (out / "wavs" / spec.name).mkdir(parents=True, exist_ok=True)

    def run(job: tuple[voices.VoiceSpec, str, str]) -> tuple[str, int, float]:
        spec, text, rel = job
        path = out / rel
        if not path.is_file():
            # Rendered beside the final file and renamed, so an interrupted build leaves no half-written wav.
            with tempfile.TemporaryDirectory(dir=path.parent, prefix=".render-") as tmp:
                partial = Path(tmp) / path.name
                voices.render(spec, text, partial, Path(tmp))
                finish_wav(partial, args.sample_rate)
                os.replace(partial, path)
        info = sf.info(str(path))
        return rel, info.samplerate, info.frames / info.samplerate

    with ThreadPoolExecutor(max(1, args.jobs)) as ex:
        results = list(ex.map(run, jobs))

    stats: dict[str, dict] = {}
    lines = []
    for (spec, text, _), (rel, sr, seconds) in zip(jobs, results, strict=True):
        s = stats.setdefault(spec.name, {**spec.to_dict(), "sample_rate": sr, "utterances": 0, "seconds": 0.0})
        s["utterances"] += 1
        s["seconds"] = round(s["seconds"] + seconds, 3)
        lines.append(list_line(rel, spec.name, text))
    humans: dict[str, list[str]] = {}
    for name, s in stats.items():
        humans.setdefault(s["human"], []).append(name)
    meta = {
        "format": "gsvkit-synthetic-corpus",
        "sentences_per_speaker": args.sentences,
        "seed": args.seed,
        "speakers": stats,
        "humans": humans,
        "sources": {"text": ["fortunes (Debian)", "bible-kjv (Debian)"], "list": "corpus.list"},
    }
    write_text(out / "corpus.list", "\n".join(lines) + "\n")
    if args.hold_out:
        unknown = [h for h in args.hold_out if h not in humans]
        if unknown:
            raise SystemExit(f"--hold-out {unknown}: no such human in this corpus; known: {sorted(humans)}")
        held = {name for h in args.hold_out for name in humans[h]}
        write_text(out / "train.list", "".join(ln + "\n" for ln in lines if ln.split("|")[1] not in held))
        write_text(out / "heldout.list", "".join(ln + "\n" for ln in lines if ln.split("|")[1] in held))
        meta["held_out"] = {"humans": args.hold_out, "speakers": sorted(held)}
    write_text(out / "speakers.json", json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list_voices:
        for v in voices.VOICES:
            state = voices.available(v) or "installed"
            print(f"{v.name:20s} {v.engine:10s} human={v.human:14s} {'free' if v.free else 'non-free':8s} {state}")
        return
    if args.out is None:
        raise SystemExit("--out is required")
    meta = build(args)
    total = sum(s["seconds"] for s in meta["speakers"].values())
    n = sum(s["utterances"] for s in meta["speakers"].values())
    print(f"wrote {n} utterances, {total / 60:.1f} min, {len(meta['speakers'])} speakers "
          f"({len(meta['humans'])} humans) to {args.out}")


if __name__ == "__main__":
    main()
