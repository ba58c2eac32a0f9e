"""Training step time and peak memory of s2 (SoVITS GAN step) and s1 (GPT step) at official sizes.

A step is what `gsv train` does per batch: s2 = generator forward, discriminator loss + backward + AdamW step,
generator loss (adversarial, feature matching, 45 x mel L1, KL, commitment) + backward + AdamW step; s1 = forward
(summed cross-entropy) + backward + AdamW step. Inputs are random with realistic shapes: s2 batch of `--s2-batch`
clips of `--seconds` s (upstream batch 4, 20480-sample decoder slices), s1 batch of `--s1-batch` items with
`--seconds` s of semantic tokens (25 Hz) and 12 phones per second.

s1 runs at dropout 0 and at the default 0.1 (upstream's), one row each: on CPU, attention dropout runs in
`gsvkit.models.s1.attention.dropout_attention` (weights and dropout mask recomputed per chunk of query rows in
the backward pass, never stored), on CUDA in torch's memory-efficient kernel.
`--s1-phones` / `--s1-tokens` set the s1 item's lengths directly (default: from `--seconds`).

Each stage runs in its own subprocess so its peak memory (max RSS on CPU, max allocated on CUDA) is its own.

    python benchmarks/train_step.py                 # CPU, both stages
    python benchmarks/train_step.py --device cuda   # GPU, fp32 and 16-mixed autocast
    python benchmarks/train_step.py --stages s2 --s2-version v2ProPlus   # s2 of another family (random sv embeddings)
    python benchmarks/train_step.py --stages s1 --s1-batch 2 --seconds 8   # a small s1-only run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _inputs_s2(cfg, batch: int, seconds: float, device: str):
    import torch

    from gsvkit.training.datasets import S2Batch

    frames = int(seconds * cfg.data.sampling_rate / cfg.data.hop_length) // 2 * 2
    phones = int(seconds * 12)
    g = torch.Generator().manual_seed(0)
    b = S2Batch(
        ssl=torch.randn(batch, cfg.model.ssl_dim, frames, generator=g),
        ssl_lengths=torch.full((batch,), frames),
        spec=torch.rand(batch, cfg.model.spec_channels, frames, generator=g),
        spec_lengths=torch.full((batch,), frames),
        wav=torch.randn(batch, 1, frames * cfg.data.hop_length, generator=g) * 0.1,
        wav_lengths=torch.full((batch,), frames * cfg.data.hop_length),
        phones=torch.randint(1, cfg.model.symbols, (batch, phones), generator=g),
        phone_lengths=torch.full((batch,), phones),
        speakers=["a"] * batch, ids=[str(i) for i in range(batch)],
        sv=torch.randn(batch, cfg.model.sv_dim, generator=g) if cfg.model.is_pro else None,
    )
    return b.to(device)


def bench_s2(batch: int, seconds: float, steps: int, device: str, amp: bool, version: str = "v2") -> dict:
    import torch

    from gsvkit.config import official_config
    from gsvkit.training.s2_module import S2Module

    cfg = official_config("s2", version)
    m = S2Module(cfg).to(device).train()
    opt_g = torch.optim.AdamW([p for p in m.net_g.parameters() if p.requires_grad], 1e-4, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(m.net_d.parameters(), 1e-4, betas=(0.8, 0.99))
    b = _inputs_s2(cfg, batch, seconds, device)
    scaler = torch.amp.GradScaler(enabled=amp)
    times = []
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=amp):
            fwd = m._generator_forward(b)
            d = m._compute_loss(fwd, "d")
        opt_d.zero_grad()
        scaler.scale(d["loss"]).backward()
        scaler.step(opt_d)
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=amp):
            g = m._compute_loss(fwd, "g")
        opt_g.zero_grad()
        scaler.scale(g["loss"]).backward()
        scaler.step(opt_g)
        scaler.update()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t)
    return {"stage": "s2", "version": version, "batch": batch, "seconds": seconds, "amp": amp,
            "step_s": sum(times) / len(times)}  # fmt: skip


def bench_s1(
    batch: int, seconds: float, steps: int, device: str, amp: bool, dropout: float = 0.1, phones: int = 0,
    tokens: int = 0,
) -> dict:
    import torch

    from gsvkit.config import official_config
    from gsvkit.models.s1 import Text2SemanticDecoder

    cfg = official_config("s1")
    model = Text2SemanticDecoder(cfg.model.model_copy(update={"dropout": dropout})).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), 2e-4, betas=(0.9, 0.95))
    ts, tx = tokens or int(seconds * 25), phones or int(seconds * 12)
    g = torch.Generator().manual_seed(0)
    phones = torch.randint(1, cfg.model.phone_vocab, (batch, tx), generator=g).to(device)
    sem = torch.randint(0, cfg.model.eos, (batch, ts), generator=g).to(device)
    bert = torch.zeros(batch, cfg.model.bert_dim, tx, device=device)
    lens_x, lens_s = torch.full((batch,), tx, device=device), torch.full((batch,), ts, device=device)
    scaler = torch.amp.GradScaler(enabled=amp)
    times = []
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=amp):
            out = model(phones, lens_x, bert, sem, lens_s)
        opt.zero_grad()
        scaler.scale(out.loss / (lens_s.sum() + batch)).backward()
        scaler.step(opt)
        scaler.update()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return {"stage": "s1", "batch": batch, "seconds": seconds, "amp": amp, "dropout": dropout, "phones": tx,
            "tokens": ts,
            "step_s": sum(times) / len(times)}


def _child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage == "s2":
        res = bench_s2(args.s2_batch, args.seconds, args.steps, args.device, args.amp, args.s2_version)
    else:
        res = bench_s1(args.s1_batch, args.seconds, args.steps, args.device, args.amp, args.dropout,
                       args.s1_phones, args.s1_tokens)
    if args.device == "cuda":
        res["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        res["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    res["device"] = args.device
    res["threads"] = torch.get_num_threads()
    print(json.dumps(res))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--seconds", type=float, default=5.0, help="clip length of every batch item")
    p.add_argument("--s2-batch", type=int, default=4)
    p.add_argument("--s1-batch", type=int, default=8)
    p.add_argument("--s1-phones", type=int, default=0, help="phones per s1 item (0: 12 per second)")
    p.add_argument("--s1-tokens", type=int, default=0, help="semantic tokens per s1 item (0: 25 per second)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--s2-version", default="v2", choices=["v1", "v2", "v2Pro", "v2ProPlus"])
    p.add_argument("--stages", default="s2,s1", help="comma-separated stages to run")
    p.add_argument("--stage", choices=["s2", "s1"], help=argparse.SUPPRESS)
    p.add_argument("--dropout", type=float, default=0.1, help=argparse.SUPPRESS)
    p.add_argument("--amp", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        _child(args)
        return
    stages = [s for s in ("s2", "s1") if s in args.stages.split(",")]
    precisions = [False, True] if args.device == "cuda" else [False]
    runs = [(s, amp, d) for amp in precisions for s in stages for d in ((0.0, 0.1) if s == "s1" else (None,))]
    print(f"{'stage':<6}{'device':<7}{'precision':<11}{'dropout':>8}{'batch':>6}{'clip s':>8}{'step s':>9}"
          f"{'peak MiB':>10}")
    for stage, amp, dropout in runs:
        cmd = [sys.executable, __file__, "--stage", stage, "--device", args.device, "--steps", str(args.steps),
               "--seconds", str(args.seconds), "--s2-batch", str(args.s2_batch), "--s1-batch", str(args.s1_batch),
               "--s1-phones", str(args.s1_phones), "--s1-tokens", str(args.s1_tokens),
               "--threads", str(args.threads), "--s2-version", args.s2_version] + (["--amp"] if amp else []) + (
               ["--dropout", str(dropout)] if dropout is not None else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        prec = "16-mixed" if r["amp"] else "32"
        drop = "-" if dropout is None else f"{dropout:.1f}"
        print(f"{stage:<6}{r['device']:<7}{prec:<11}{drop:>8}{r['batch']:>6}{r['seconds']:>8.1f}{r['step_s']:>9.2f}"
              f"{r['peak_mb']:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
