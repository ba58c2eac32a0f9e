"""Speed of the two models at the official v2 sizes on CPU, with synthetic (randomly initialised) weights.

- s1 (GPT): tokens per second generating 250 semantic tokens (10 s of audio) after a 60-phone text and a
  75-token prompt (3 s), top_k=15, batch 1. "total" counts the prompt pass; "decode" is the per-token steady state;
  "first pass" is the time to the first token (the pass over the 135 positions of text and prompt).
  Variants: fp32 (the reference), bf16 weights, int8 and int4 block-wise weights (`with_precision`; the layers on
  onnxruntime), int8-torch (`quantize_int8(step_graph=False)`: torch's dynamic int8 layers), int4-torch
  (`quantize_int4(step_graph=False)`: torch's 4-bit kernel). `--alternate N` runs the variants in one process in
  turn for N rounds instead and prints medians and paired ratios to the first variant (the way to compare them on
  a shared machine).
- s2 (SoVITS): real-time factor of `decode` for 250 tokens (10 s of 32 kHz audio), one 3 s reference.

Run: `python benchmarks/models.py` (add `--threads N`, `--tokens N`, `--repeats N`, `--variants fp32,bf16,int8`,
`--skip-s2`). Figures are the best of the repeats after one warm-up run (on a shared machine the best run is the
one least disturbed by other processes). Nothing is asserted.

`--widths 1,2,3,4`: instead, the s1 decode step with B rows together (rows of 60, 52, 44, ... phones after one
prompt, padding masked; "4 equal" without padding), as the median step time, and the time to drop one row from
the KV cache (what a batch does when a row ends; the alternative, decoding the ended row on masked, costs the
wider step until the batch ends).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def _s1_model(dtype: str):
    from gsvkit.config import S1ModelConfig
    from gsvkit.models.s1 import Text2SemanticDecoder

    torch.manual_seed(0)
    model = Text2SemanticDecoder(S1ModelConfig(version="v2")).eval()
    with torch.no_grad():
        # Keep EOS out of reach so every run makes exactly the requested number of tokens: the last LayerNorm
        # output has zero mean over features (its gain is 1 here), so with bias 1 every hidden state sums to D
        # and an all -1 EOS row scores -D.
        model.h.layers[-1].norm2.bias.fill_(1.0)
        model.ar_predict_layer.weight[model.eos].fill_(-1.0)
    if dtype == "int4-torch":  # int4 on torch's own 4-bit kernel instead of the onnxruntime graph
        return model.quantize_int4(step_graph=False)
    if dtype == "int8-torch":  # torch's dynamic int8 layers instead of the onnxruntime graph
        return model.quantize_int8(step_graph=False)
    return model.with_precision(dtype)


def _s1_inputs(model, tx: int, tp: int):
    g = torch.Generator().manual_seed(0)
    phones = torch.randint(0, model.cfg.phone_vocab, (1, tx), generator=g)
    bert = torch.randn(1, model.cfg.bert_dim, tx, generator=g)
    prompt = torch.randint(0, 1024, (1, tp), generator=g)
    return phones, bert, prompt


S1_SAMPLING = dict(top_k=15, top_p=1.0, temperature=1.0, repetition_penalty=1.35)


def bench_s1(variant: str, tokens: int, repeats: int, tx: int = 60, tp: int = 75) -> dict[str, float]:
    model = _s1_model(variant)
    phones, bert, prompt = _s1_inputs(model, tx, tp)
    kw = S1_SAMPLING

    def run(n: int) -> tuple[float, float, int, float]:
        t0 = time.perf_counter()
        first = None
        count = 0
        for step in model.decode_steps(phones, bert, prompt, max_new_tokens=n, seed=0, **kw):
            count += not step.is_eos
            if first is None:
                first = time.perf_counter()
        first = t0 if first is None else first
        end = time.perf_counter()
        return end - t0, (end - first) / max(count - 1, 1), count, first - t0

    run(20)  # warm-up: allocator, kernels, positional tables
    results = [run(tokens) for _ in range(repeats)]
    total = min(r[0] for r in results)
    per_token = min(r[1] for r in results)
    return {"tokens": results[0][2], "total_tok_s": tokens / total, "decode_tok_s": 1.0 / per_token, "total_s": total,
            "first_pass_s": min(r[3] for r in results)}  # fmt: skip


def bench_s1_widths(variant: str, widths: list[int], tokens: int, tx: int = 60, tp: int = 75) -> None:
    from gsvkit.models.s1 import KVCache

    model = _s1_model(variant)
    b_max = max(widths)
    g = torch.Generator().manual_seed(0)
    phones = torch.randint(0, model.cfg.phone_vocab, (b_max, tx), generator=g)
    bert = torch.randn(b_max, model.cfg.bert_dim, tx, generator=g)
    prompt = torch.randint(0, 1024, (1, tp), generator=g)
    kw = dict(S1_SAMPLING, seed=0)

    def step_time(b: int, lens: torch.Tensor, n: int) -> float:
        steps = model.decode_steps(phones[:b], bert[:b], prompt, lens, max_new_tokens=n, **kw)
        ends = [time.perf_counter() for step in steps if step.row == b - 1]
        return statistics.median(e - s for s, e in zip(ends, ends[1:], strict=False))

    step_time(1, torch.tensor([tx]), 10)  # warm-up
    base = None
    cases = [(b, torch.tensor([tx - 8 * i for i in range(b)]), f"{b} rows") for b in widths]
    cases.append((b_max, torch.full((b_max,), tx), f"{b_max} equal"))
    for b, lens, label in cases:
        t = step_time(b, lens, tokens)
        base = t if base is None else base
        print(f"s1 {variant} step, {label:8s}: {1000 * t:6.1f} ms = {t / base:4.2f}x one row, "
              f"{b / t:6.1f} tokens/s in all", flush=True)  # fmt: skip
    heads, d = model.cfg.head, model.cfg.hidden_dim
    like = model.ar_audio_embedding.word_embeddings.weight
    drops = []
    for _ in range(5):
        cache = KVCache(len(model.h.layers), b_max, heads, d // heads, tx + tp + 1024, like)
        kv = torch.randn(b_max, heads, tx + tp + tokens, d // heads).to(like.dtype)
        for layer in range(len(model.h.layers)):
            cache.update(layer, kv, kv)
        cache.advance(kv.shape[2])
        t0 = time.perf_counter()
        cache.keep(list(range(1, b_max)))  # the first row ends: every other row moves
        drops.append(time.perf_counter() - t0)
    print(f"s1 {variant} dropping the first of {b_max} rows at {tx + tp + tokens} cached positions: "
          f"{1000 * statistics.median(drops):.1f} ms", flush=True)  # fmt: skip


def bench_s2(tokens: int, repeats: int, phones: int = 120, ref_frames: int = 150) -> dict[str, float]:
    from gsvkit.config import S2Config
    from gsvkit.models.s2 import SynthesizerTrn

    cfg = S2Config()
    torch.manual_seed(0)
    model = SynthesizerTrn(cfg.model).eval()
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, cfg.model.codebook_size, (1, 1, tokens), generator=g)
    text = torch.randint(0, cfg.model.symbols, (1, phones), generator=g)
    refer = [torch.rand(1, cfg.model.spec_channels, ref_frames, generator=g)]  # a 3 s reference spectrogram
    seconds = tokens * 2 * cfg.data.hop_length / cfg.data.sampling_rate  # 25 Hz codes, upsampled x2 to 50 Hz

    def run() -> float:
        t0 = time.perf_counter()
        model.decode(codes, text, refer, noise_scale=0.5, speed=1.0, generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - t0

    run()
    t = min(run() for _ in range(repeats))
    return {"audio_s": seconds, "decode_s": t, "rtf": t / seconds}


def bench_s1_alternating(variants: list[str], tokens: int, rounds: int, tx: int = 60, tp: int = 75) -> None:
    """The variants in one process, in turn for `rounds` rounds (the order rotated each round): median tokens/s of
    a whole generation (first pass included) and the median paired ratio to the first variant."""
    models = {v: _s1_model(v) for v in variants}
    phones, bert, prompt = _s1_inputs(models[variants[0]], tx, tp)

    def run(model, n: int) -> float:
        t0 = time.perf_counter()
        for _ in model.decode_steps(phones, bert, prompt, max_new_tokens=n, seed=0, **S1_SAMPLING):
            pass
        return n / (time.perf_counter() - t0)

    for model in models.values():
        run(model, 20)  # warm-up
    got: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(rounds):
        for v in variants[i % len(variants) :] + variants[: i % len(variants)]:
            got[v].append(run(models[v], tokens))
    for v in variants:
        ratio = statistics.median(a / b for a, b in zip(got[v], got[variants[0]], strict=True))
        print(f"s1 {v}: {statistics.median(got[v]):6.1f} tokens/s (median of {rounds}; "
              f"{', '.join(f'{x:.1f}' for x in got[v])}), {ratio:.2f}x {variants[0]}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="fp32,bf16,int8", help="fp32, bf16, int8, int4, int8-torch, int4-torch")
    parser.add_argument("--alternate", type=int, default=0, help="s1 only: the variants in turn for N rounds")
    parser.add_argument("--skip-s2", action="store_true")
    parser.add_argument("--widths", default="", help="s1 step time with B rows together, e.g. 1,2,3,4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, load average {load:.1f}", flush=True)
    if args.alternate:
        bench_s1_alternating([v.strip() for v in args.variants.split(",")], args.tokens, args.alternate)
        return
    if args.widths:
        for variant in args.variants.split(","):
            bench_s1_widths(variant.strip(), [int(w) for w in args.widths.split(",")], args.tokens)
        return
    for variant in args.variants.split(","):
        r = bench_s1(variant.strip(), args.tokens, args.repeats)
        label = {"fp32": "fp32 (reference)", "bf16": "bf16 weights (approximate)", "int8": "int8 graph (approximate)",
                 "int8-torch": "int8 torch layers (approximate)", "int4": "int4 graph (approximate)",
                 "int4-torch": "int4 torch kernel (approximate)"}  # fmt: skip
        print(
            f"s1 {label.get(variant, variant):28s} {r['tokens']} tokens: {r['total_tok_s']:6.1f} tokens/s total "
            f"({r['total_s']:.2f} s), {r['decode_tok_s']:6.1f} tokens/s decode, first pass and token "
            f"{r['first_pass_s']:.3f} s",
            flush=True,
        )
    if not args.skip_s2:
        try:
            r = bench_s2(args.tokens, args.repeats)
        except ImportError as err:  # s2 not available in this checkout
            print(f"s2 skipped: {err}")
        else:
            print(f"s2 decode fp32 {r['audio_s']:.1f} s of audio: {r['decode_s']:.2f} s, RTF {r['rtf']:.3f}")


if __name__ == "__main__":
    main()
