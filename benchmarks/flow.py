"""CPU speed of the v4 decoder at official sizes (synthetic weights), side by side with v2's s2 decode.

For SECONDS of audio (25 tokens per second, one 3 s reference) the script times, alternating and `--repeats` times:

- v2: `SynthesizerTrn.decode` (HiFi-GAN straight to 32 kHz).
- v4: `decode_encp` + `sample_steps` Euler steps of the official-size DiT (382 M-parameter SoVITS) with the
  reference as prompt + the v4 vocoder to 48 kHz, i.e. what `TTS` runs per fragment.

It prints the medians, the real-time factor (seconds of compute per second of audio) of each and their ratio.
Run: `python benchmarks/flow.py` (`--seconds 4 --steps 8 --repeats 3 --threads N`). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gsvkit.config import official_config
    from gsvkit.models.s2 import SynthesizerTrn
    from gsvkit.models.s2.flow import SynthesizerTrnV3
    from gsvkit.models.vocoders import v4_vocoder
    from gsvkit.models.vocoders.mel import denorm_mel

    torch.manual_seed(0)
    v2 = SynthesizerTrn(official_config("s2", "v2").model).eval()
    v4 = SynthesizerTrnV3(official_config("s2", "v4").model).eval()
    voc = v4_vocoder().eval()
    n = int(args.seconds * 25)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 1024, (1, 1, n), generator=g)
    text = torch.randint(0, 732, (1, int(args.seconds * 12)), generator=g)
    refer = torch.rand(1, 1025, 150, generator=g)  # 3 s of 32 kHz spectrogram frames
    ref_codes = torch.randint(0, 1024, (1, 1, 75), generator=g)
    ref_text = torch.randint(0, 732, (1, 30), generator=g)
    ref_mel = torch.rand(1, 100, 300, generator=g) * 2 - 1  # 3 s of normalised v4 mel

    def run_v2() -> None:
        v2.decode(codes, text, [refer], noise_scale=0.5)

    def run_v4() -> None:
        fea_ref, ge = v4.decode_encp(ref_codes, ref_text, refer)
        fea, _ = v4.decode_encp(codes, text, refer, ge)
        mel = v4.sample_mel(fea_ref, ref_mel, fea, args.steps)
        voc(denorm_mel(mel))

    times: dict[str, list[float]] = {"v2": [], "v4": []}
    with torch.inference_mode():
        run_v2()
        run_v4()  # warm-up
        for _ in range(args.repeats):
            for name, fn in (("v2", run_v2), ("v4", run_v4)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"audio: {args.seconds:.1f} s, v4 sample_steps {args.steps}, threads {torch.get_num_threads()}, "
          f"{args.repeats} alternating repeats (medians)")  # fmt: skip
    for k in ("v2", "v4"):
        print(f"  {k}: {med[k]:.2f} s  (real-time factor {med[k] / args.seconds:.2f})")
    print(f"  v4 / v2: {med['v4'] / med['v2']:.1f}x the compute for the same audio")


if __name__ == "__main__":
    main()
