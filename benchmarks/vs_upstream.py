"""gsvkit against upstream GPT-SoVITS, side by side: same synthetic official-size v2 weights, same inputs.

Weights: every key from `synth_param` (tests/parity.py; the parity fixtures' rule), then EOS kept out of reach in
both models alike (last LayerNorm bias 1, EOS row -1, as benchmarks/models.py) so each run makes exactly `--tokens`
tokens (250 = 10 s of audio). Inputs: 60 phones with BERT features, a 75-token prompt, a 4 s reference spectrogram.

Each configuration runs in its own process (upstream under `--upstream-python`, gsvkit under this interpreter),
upstream and gsvkit alternating for `--pairs` pairs; printed: per-pair ratios and their medians for
- s1: tokens/s (upstream `infer_panel`, top_k 15, penalty 1.35 vs `Text2SemanticDecoder.generate` at `--mode`);
- s2: decode time of the tokens (upstream `SynthesizerTrn.decode` vs gsvkit's at `--s2-mode`, noise 0.5);
- e2e: s1 + s2 model time of one fragment (the text front end and the cached reference are not included);
- first audio: time from the start of s1 to the first streamed chunk's audio (best of two): upstream's
  `streaming_mode` (16-token chunks, `decode_streaming`) vs gsvkit's `WindowedDecoder` with the default
  `StreamParams` (the rule `TTS.stream` uses), both generating and decoding in turn in one thread of control;
- peak RSS of each process (weights built, both stages run; gsvkit's models are converted in place and s2 is
  loaded for inference, `for_inference`, as `TTS` loads them).
Quality (gsvkit at `--mode`/`--s2-mode` against gsvkit fp32/fp32, one process): greedy (top_k=1) token agreement
over the run and the first divergent step; for sampled output with the same seed, the log-mel L1 distance of the
decoded audio and its speaker similarity (resemblyzer, when the eval extra is installed); for s2 alone (the fp32
tokens decoded by both decoders, same noise), the same two figures, beside the distance two noise seeds make.

Run: `python benchmarks/vs_upstream.py --upstream /path/to/GPT-SoVITS --upstream-python /path/to/venv/bin/python`
(`--threads 1`, `--pairs 5`, `--tokens 250`, `--mode int8`, `--s2-mode auto`, `--json`). Timings only mean
something as ratios of one run; on a shared machine say so with them.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

try:
    from gsvkit.models.s1.gpt import PRECISIONS
except ImportError:  # the upstream worker's interpreter has no gsvkit; it ignores --mode
    PRECISIONS = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
TX, TP, REF_FRAMES, S2_PHONES = 60, 75, 200, 60


def _weights() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from parity import synth_state_dict

    s1 = synth_state_dict("manifest_s1_v2.json", prefix="model.")
    s1["model.h.layers.23.norm2.bias"].fill_(1.0)
    s1["model.ar_predict_layer.weight"][1024].fill_(-1.0)
    return s1, synth_state_dict("manifest_s2_v2.json")


def _inputs(tokens: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "phones": torch.randint(0, 732, (1, TX), generator=g),
        "bert": torch.randn(1, 1024, TX, generator=g),
        "prompt": torch.randint(0, 1024, (1, TP), generator=g),
        "codes": torch.randint(0, 1024, (1, 1, tokens), generator=g),
        "s2_phones": torch.randint(0, 732, (1, S2_PHONES), generator=g),
        "refer": torch.rand(1, 1025, REF_FRAMES, generator=g),
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ workers
def _upstream_models(folder: Path, s1_sd, s2_sd):
    import yaml

    sys.path[:0] = [str(folder / "GPT_SoVITS"), str(folder)]
    from AR.models.t2s_model import Text2SemanticDecoder
    from module.models import SynthesizerTrn

    cfg = yaml.safe_load((folder / "GPT_SoVITS" / "configs" / "s1longer-v2.yaml").read_text())
    s1 = Text2SemanticDecoder(cfg, top_k=15)
    s1.load_state_dict({k.removeprefix("model."): v for k, v in s1_sd.items()}, strict=True)
    hps = json.loads((folder / "GPT_SoVITS" / "configs" / "s2.json").read_text())
    s2 = SynthesizerTrn(1025, 32, n_speakers=300, **hps["model"], version="v2")
    s2.load_state_dict(s2_sd, strict=True)
    return s1.eval(), s2.eval()


def _gsvkit_models(s1_sd, s2_sd, mode: str, s2_mode: str):
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.s2 import SynthesizerTrn, resolve_s2_precision

    s1 = Text2SemanticDecoder.from_upstream_state_dict(s1_sd, version="v2").with_precision(mode, inplace=True)
    s2 = SynthesizerTrn.from_upstream_state_dict(s2_sd, version="v2").for_inference()  # as `TTS` loads it
    return s1, s2.set_precision(resolve_s2_precision(s2_mode))


@torch.inference_mode()
def worker(args: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    s1_sd, s2_sd = _weights()
    x = _inputs(args.tokens)
    if args.worker == "upstream":
        s1, s2 = _upstream_models(Path(args.upstream), s1_sd, s2_sd)
        kw = {"top_k": 15, "top_p": 1, "temperature": 1.0, "repetition_penalty": 1.35}

        def gen(n: int) -> int:
            torch.manual_seed(0)
            _, idx = s1.infer_panel(x["phones"], torch.tensor([TX]), x["prompt"], x["bert"], early_stop_num=n, **kw)
            return int(idx)

        def dec(codes):
            return s2.decode(codes, x["s2_phones"], [x["refer"]], noise_scale=0.5)

        def first_audio() -> float:  # upstream's streaming_mode: the first 16-token chunk, then decode_streaming
            torch.manual_seed(0)
            t0 = time.perf_counter()
            steps = s1.infer_panel_naive(x["phones"], torch.tensor([TX]), x["prompt"], x["bert"],
                                         early_stop_num=args.tokens, streaming_mode=True, chunk_length=16,
                                         **kw)  # fmt: skip
            tokens, _ = next(steps)
            s2.decode_streaming(tokens.unsqueeze(0), x["s2_phones"], [x["refer"]], noise_scale=0.5)
            t = time.perf_counter() - t0
            steps.close()
            return t
    else:
        s1, s2 = _gsvkit_models(s1_sd, s2_sd, args.mode, args.s2_mode)
        del s1_sd, s2_sd
        kw = {"top_k": 15, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.35}

        def gen(n: int) -> int:
            return int(s1.generate(x["phones"], x["bert"], x["prompt"], max_new_tokens=n, seed=0, **kw).shape[1])

        def dec(codes):
            return s2.decode(codes, x["s2_phones"], [x["refer"]], 0.5, generator=torch.Generator().manual_seed(0))

        def first_audio() -> float:  # `TTS.stream`'s rule: WindowedDecoder with the default StreamParams
            from gsvkit.inference.streaming import WindowedDecoder

            t0 = time.perf_counter()
            windows = WindowedDecoder(lambda tokens: dec(tokens[None, None]).reshape(-1).numpy())
            steps = s1.generate_iter(x["phones"], x["bert"], x["prompt"], max_new_tokens=args.tokens, seed=0, **kw)
            for token in steps:
                if windows.push(token):
                    break
            t = time.perf_counter() - t0
            steps.close()
            return t

    gen(12)  # warm-up
    dec(x["codes"][..., :25])
    first = first_audio()
    t0 = time.perf_counter()
    n = gen(args.tokens)
    t1 = time.perf_counter()
    wav = dec(x["codes"])
    t2 = time.perf_counter()
    return {"s1_tok_s": n / (t1 - t0), "s1_s": t1 - t0, "s2_s": t2 - t1, "tokens": n, "audio_s": wav.shape[-1] / 32000,
            "first_audio_s": min(first, first_audio()), "peak_rss_mb": _rss_mb()}  # fmt: skip


@torch.inference_mode()
def quality(args: argparse.Namespace) -> dict[str, float | int | None]:
    from gsvkit.eval.mel import mel_distance

    torch.set_num_threads(args.threads)
    s1_sd, s2_sd = _weights()
    x = _inputs(args.tokens)
    ref, s2 = _gsvkit_models(s1_sd, s2_sd, "fp32", "fp32")
    fast, fast_s2 = _gsvkit_models(s1_sd, s2_sd, args.mode, args.s2_mode)
    n = args.tokens
    greedy = [m.generate(x["phones"], x["bert"], x["prompt"], top_k=1, max_new_tokens=n)[0] for m in (ref, fast)]
    same = greedy[0] == greedy[1]
    first = int((~same).nonzero()[0]) if not bool(same.all()) else None
    kw = {"top_k": 15, "max_new_tokens": n, "seed": 0}

    def dec(model, codes, seed=0):
        wav = model.decode(codes, x["s2_phones"], [x["refer"]], 0.5, generator=torch.Generator().manual_seed(seed))
        return wav.reshape(-1).numpy()

    codes = [m.generate(x["phones"], x["bert"], x["prompt"], **kw)[None] for m in (ref, fast)]
    a, b = dec(s2, codes[0]), dec(fast_s2, codes[1])  # fp32 pipeline, fast pipeline
    b2, a2 = dec(fast_s2, codes[0]), dec(s2, codes[0], seed=1)  # s2 alone; fp32 with another noise draw

    def mel(u, v) -> float:
        return float(mel_distance(u, v, sr=32000, ref_sr=32000).distance)

    def sim(u, v) -> float | None:
        try:
            from gsvkit.eval.similarity import speaker_similarity

            return float(speaker_similarity(u, v, sr=32000))
        except Exception:  # the eval extra (resemblyzer) is optional
            return None

    return {"greedy_agreement": float(same.float().mean()), "greedy_first_divergence": first,
            "sampled_mel_distance": mel(b, a), "sampled_speaker_similarity": sim(b, a),
            "s2_mel_distance": mel(b2, a), "s2_speaker_similarity": sim(b2, a),
            "s2_other_noise_mel_distance": mel(a2, a)}  # fmt: skip


# ------------------------------------------------------------------------------------------------ driver
def _run(args: argparse.Namespace, who: str) -> dict[str, float]:
    python = args.upstream_python if who == "upstream" else sys.executable
    cmd = [python, __file__, "--worker", who, "--upstream", args.upstream, "--threads", str(args.threads),
           "--tokens", str(args.tokens), "--mode", args.mode, "--s2-mode", args.s2_mode]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{who} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="checkout of upstream GPT-SoVITS")
    p.add_argument("--upstream-python", default=sys.executable, help="interpreter with upstream's dependencies")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--mode", default="int8", choices=PRECISIONS, help="gsvkit s1 precision measured")
    p.add_argument("--s2-mode", default="auto", choices=("auto", "fp32", "bf16"), help="gsvkit s2 precision measured")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--worker", choices=("upstream", "gsvkit", "quality"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(quality(args) if args.worker == "quality" else worker(args)))
        return
    rows = []
    for i in range(args.pairs):
        order = ("upstream", "gsvkit") if i % 2 == 0 else ("gsvkit", "upstream")
        got = {who: _run(args, who) for who in order}
        up, gk = got["upstream"], got["gsvkit"]
        rows.append({"upstream": up, "gsvkit": gk, "s1": gk["s1_tok_s"] / up["s1_tok_s"], "s2": up["s2_s"] / gk["s2_s"],
                     "e2e": (up["s1_s"] + up["s2_s"]) / (gk["s1_s"] + gk["s2_s"]),
                     "first": up["first_audio_s"] / gk["first_audio_s"]})  # fmt: skip
        if not args.json:
            r = rows[-1]
            print(f"pair {i + 1}: s1 {r['s1']:.2f}x  s2 {r['s2']:.2f}x  e2e {r['e2e']:.2f}x  first audio "
                  f"{r['first']:.2f}x", flush=True)  # fmt: skip
    q = _run(args, "quality")

    def med(key: str, who: str | None = None) -> float:
        return statistics.median(r[who][key] if who else r[key] for r in rows)

    result = {"s1_speedup": med("s1"), "s2_speedup": med("s2"), "e2e_speedup": med("e2e"),
              "first_audio_s": med("first_audio_s", "gsvkit"), "first_audio_speedup": med("first"),
              "upstream_first_audio_s": med("first_audio_s", "upstream"),
              "peak_rss_mb": med("peak_rss_mb", "gsvkit"), "upstream_peak_rss_mb": med("peak_rss_mb", "upstream"),
              "threads": args.threads, "pairs": args.pairs, "tokens": args.tokens,
              "mode": f"precision {args.mode}, s2_precision {args.s2_mode}",
              "upstream_s1_tok_s": med("s1_tok_s", "upstream"), "gsvkit_s1_tok_s": med("s1_tok_s", "gsvkit"),
              "upstream_s2_s": med("s2_s", "upstream"), "gsvkit_s2_s": med("s2_s", "gsvkit"), **q}  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    print(f"\n{args.threads} thread(s), {args.pairs} pairs, {args.tokens} tokens, gsvkit {result['mode']}")
    print(f"s1 tokens/s   upstream {result['upstream_s1_tok_s']:.1f}  gsvkit {result['gsvkit_s1_tok_s']:.1f}  "
          f"median ratio {result['s1_speedup']:.2f}x")
    print(f"s2 decode s   upstream {result['upstream_s2_s']:.2f}  gsvkit {result['gsvkit_s2_s']:.2f}  "
          f"median ratio {result['s2_speedup']:.2f}x")
    print(f"s1+s2         median ratio {result['e2e_speedup']:.2f}x")
    print(f"first audio s upstream {result['upstream_first_audio_s']:.2f}  gsvkit {result['first_audio_s']:.2f}  "
          f"median ratio {result['first_audio_speedup']:.2f}x")
    print(f"peak RSS MB   upstream {result['upstream_peak_rss_mb']:.0f}  gsvkit {result['peak_rss_mb']:.0f}")
    print(f"quality vs fp32: greedy agreement {q['greedy_agreement']:.3f} (first divergence "
          f"{q['greedy_first_divergence']}), sampled mel distance {q['sampled_mel_distance']:.3f}, "
          f"speaker similarity {q['sampled_speaker_similarity']}")  # fmt: skip
    print(
        f"s2 alone vs fp32: mel distance {q['s2_mel_distance']:.3f} (another noise seed: "
        f"{q['s2_other_noise_mel_distance']:.3f}), speaker similarity {q['s2_speaker_similarity']}"
    )


if __name__ == "__main__":
    main()
