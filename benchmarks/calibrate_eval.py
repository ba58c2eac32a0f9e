#!/usr/bin/env python3
"""Calibrate gsvkit's evaluation scores on the synthetic corpus (benchmarks/corpus/build_corpus.py).

Prints what a speaker-similarity value means here (same speaker vs same human through another engine vs
different humans, with the equal-error-rate threshold) and the word error rate of each engine voice's own
audio (the floor a cloned voice can be compared against).

    python benchmarks/corpus/build_corpus.py --out /tmp/corpus --sentences 5
    python benchmarks/calibrate_eval.py /tmp/corpus [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from gsvkit.eval.evaluate import items_from_list
from gsvkit.eval.similarity import cosine, get_encoder
from gsvkit.eval.wer import get_transcriber, word_error_rate


def equal_error_rate(same: list[float], diff: list[float]) -> tuple[float, float]:
    """(EER, threshold): where the rate of same-speaker pairs below equals different-speaker pairs above."""
    same_a, diff_a = np.asarray(same), np.asarray(diff)
    best = (np.inf, 0.0, 0.0)
    for t in np.unique(np.concatenate([same_a, diff_a])):
        frr, far = float(np.mean(same_a < t)), float(np.mean(diff_a >= t))
        if abs(frr - far) < best[0]:
            best = (abs(frr - far), (frr + far) / 2, float(t))
    return best[1], best[2]


def stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", type=Path, help="a directory written by build_corpus.py")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--no-wer", action="store_true", help="skip transcription")
    args = p.parse_args()

    meta = json.loads((args.corpus / "speakers.json").read_text())
    items = items_from_list(args.corpus / "corpus.list")
    human_of = {name: s["human"] for name, s in meta["speakers"].items()}
    engine_of = {name: s["engine"] for name, s in meta["speakers"].items()}

    t0 = time.perf_counter()
    encoder = get_encoder()
    emb = {it.id: encoder.embed(it.ground_truth) for it in items}
    t_sim = time.perf_counter() - t0
    pairs: dict[str, list[float]] = defaultdict(list)
    for a, b in itertools.combinations(items, 2):
        s = cosine(emb[a.id], emb[b.id])
        if a.speaker == b.speaker:
            pairs["same speaker (same engine voice)"].append(s)
        elif human_of[a.speaker] == human_of[b.speaker]:
            pairs["same human, another engine"].append(s)
        elif engine_of[a.speaker] == engine_of[b.speaker] == "espeak-ng":
            # Variants of one formant synthesiser: different settings, not different people.
            pairs["two espeak-ng variants"].append(s)
        else:
            pairs["different humans"].append(s)
    same = pairs["same speaker (same engine voice)"]
    diff = pairs["different humans"]
    eer, threshold = equal_error_rate(same, diff)

    print(f"corpus {args.corpus}: {len(items)} utterances, {len(meta['speakers'])} speakers, "
          f"{len(meta['humans'])} humans")
    print(f"\nspeaker similarity (resemblyzer), {t_sim:.1f} s to embed")
    print(f"{'pairs':36s} {'n':>6s} {'mean':>6s} {'std':>6s} {'min':>6s} {'max':>6s}")
    figures: dict = {"utterances": len(items), "speakers": len(meta["speakers"]), "similarity": {}}
    for name in ("same speaker (same engine voice)", "same human, another engine", "two espeak-ng variants",
                 "different humans"):
        st = stats(pairs[name])
        figures["similarity"][name] = st
        if st["n"]:
            print(f"{name:36s} {st['n']:6d} {st['mean']:6.3f} {st['std']:6.3f} {st['min']:6.3f} {st['max']:6.3f}")
    print(f"equal error rate (same speaker vs different humans, espeak-ng variant pairs excluded): {eer:.3f} "
          f"at threshold {threshold:.3f}")
    figures["eer"] = {"eer": eer, "threshold": threshold}

    if not args.no_wer:
        t0 = time.perf_counter()
        transcriber = get_transcriber()
        per_speaker: dict[str, list] = defaultdict(list)
        for it in items:
            r = word_error_rate(transcriber.transcribe(it.ground_truth), it.text)
            per_speaker[it.speaker].append(r)
        t_wer = time.perf_counter() - t0
        print(f"\nword error rate of each voice's own audio (Whisper tiny.en), {t_wer:.1f} s to transcribe")
        print(f"{'speaker':18s} {'engine':10s} {'n':>3s} {'WER':>6s}  (corpus-level: errors / reference words)")
        figures["wer"] = {}
        by_engine: dict[str, list] = defaultdict(list)
        for spk, rs in per_speaker.items():
            wer = _corpus_wer(rs)
            by_engine[engine_of[spk]] += rs
            figures["wer"][spk] = {"engine": engine_of[spk], "n": len(rs), "wer": wer}
            print(f"{spk:18s} {engine_of[spk]:10s} {len(rs):3d} {wer:6.3f}")
        print("per engine: " + ", ".join(f"{e} {_corpus_wer(rs):.3f}" for e, rs in by_engine.items()))
        figures["wer_by_engine"] = {e: _corpus_wer(rs) for e, rs in by_engine.items()}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def _corpus_wer(results: list) -> float:
    errors = sum(r.substitutions + r.deletions + r.insertions for r in results)
    words = sum(r.substitutions + r.deletions + r.hits for r in results)
    return errors / max(words, 1)


if __name__ == "__main__":
    main()
