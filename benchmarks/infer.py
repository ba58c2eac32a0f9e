"""End-to-end inference speed at the official v2 sizes on CPU, with synthetic (randomly initialised) weights.

What it builds: official-size s1 (77.6 M) and s2 (51.3 M) saved as gsvkit checkpoints, a base-size HuBERT
(transformers default config, 94 M), a 4 s reference clip; then `TTS` speaks one English fragment of exactly
`--tokens` semantic tokens (EOS is made unreachable, as in benchmarks/models.py; 250 tokens = 10 s of audio).

Printed (medians over `--repeats` after a warm-up):
- whole synthesis: end-to-end RTF (text front end + s1 + s2, reference cached), s1 tokens/s, s2 decode RTF;
- the reference's first use (HuBERT + prompt tokens + spectrogram), which later calls take from the cache;
- streaming: time to the first audio chunk and the stream's overall RTF, with the default `StreamParams`;
- peak resident memory of the process that loads the models and synthesises (the synthetic weights are built in
  another process first, so their construction is not counted).

`--thread-pairs N` prints instead streaming's first audio and whole-stream time with s1 in a background thread and
without (`StreamParams.threaded` True / False), alternating for N pairs, with medians and the paired ratio.

`--voice`: speak with a voice directory made by `create_voice` (its reference's prompt tokens stored), as a user of
a trained v2 voice does: the measuring process then never loads HuBERT.

`--batch-pairs N` prints instead the gain of `batch_size`: a text of 4 fragments of `--tokens` tokens each,
synthesised with batch_size 1 and 4 alternately (N pairs, the order swapped every pair), with per-pair and median
paired ratios (batch 1 time / batch 4 time) of the s1 time and the end-to-end time. At batch_size 4, s1 generates
the 4 fragments as one batch and s2 decodes them as one sequence.

Run: `python benchmarks/infer.py` (`--threads 2`, `--tokens 250`, `--repeats 3`, `--precision auto|fp32|bf16|int8|int4`,
`--s2-precision auto|fp32|bf16`, `--voice`).
Nothing is asserted; upstream on a quiet 2-thread CPU: s1 29-30 tokens/s, s2 RTF 0.26-0.38, s1+s2 RTF 1.1-1.2.
Print the load average with the figures: on a CPU shared with other work, two OpenMP threads per op make batch-1
s1 decoding several times slower than one thread (every small op waits for the slower thread), so compare
`--threads 1` there.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from gsvkit.models.s1.gpt import PRECISIONS
from gsvkit.models.s2.sovits import S2_PRECISIONS

REF_TEXT = "This is a reference clip of four seconds."
TEXT = "The quick brown fox jumps over the lazy dog while the band plays on"
TEXT4 = (
    "The quick brown fox jumps over the lazy dog. A small boat drifts across the quiet lake. "
    "The band plays on while the sun goes down. Children laugh as they run along the shore."
)


def build(root: Path) -> dict[str, Path]:
    from transformers import HubertConfig, HubertModel

    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import S1Config, S2Config
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.s2 import SynthesizerTrn

    torch.manual_seed(0)
    c1, c2 = S1Config(), S2Config()
    s1 = Text2SemanticDecoder(c1.model).eval()
    with torch.no_grad():  # EOS out of reach: every run makes exactly the requested number of tokens
        s1.h.layers[-1].norm2.bias.fill_(1.0)
        s1.ar_predict_layer.weight[s1.eos].fill_(-1.0)
    s2 = SynthesizerTrn(c2.model).eval()
    save_checkpoint(root / "s1.safetensors", s1.state_dict(), c1, {})
    save_checkpoint(root / "s2.safetensors", {k: v for k, v in s2.state_dict().items() if not k.startswith("enc_q.")},
                    c2, {})  # fmt: skip
    HubertModel(HubertConfig()).eval().save_pretrained(root / "hubert")
    t = np.arange(4 * 32000) / 32000
    wav = 0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    sf.write(root / "ref.wav", wav.astype(np.float32), 32000)
    return {"s1": root / "s1.safetensors", "s2": root / "s2.safetensors", "hubert": root / "hubert",
            "ref": root / "ref.wav"}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident memory: Linux's VmHWM, which starts afresh at exec (getrusage's ru_maxrss keeps
    the spawning parent's peak, here the one that built the weights), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thread_pairs(tts, kw: dict, pairs: int) -> None:
    """Streaming with s1 in a background thread and without, alternating: first-audio and whole-stream medians."""
    tts.synthesize_result("Warm up.", "en", **{**kw, "max_new_tokens": 5})
    got: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for i in range(pairs):
        for threaded in (True, False) if i % 2 == 0 else (False, True):
            t0 = time.perf_counter()
            first = None
            for _ in tts.stream(TEXT, "en", stream={"threaded": threaded}, **kw):
                first = first or time.perf_counter() - t0
            got[threaded].append((first or 0.0, time.perf_counter() - t0))
    med = statistics.median
    for threaded, runs in got.items():
        print(f"stream {'with' if threaded else 'without'} a token thread: first audio "
              f"{med(r[0] for r in runs):.2f} s ({', '.join(f'{r[0]:.2f}' for r in runs)}), whole stream "
              f"{med(r[1] for r in runs):.2f} s")  # fmt: skip
    ratio = med(a[0] / b[0] for a, b in zip(got[True], got[False], strict=True))
    print(f"median paired ratio of first audio, threaded / in turn: {ratio:.2f}x ({pairs} pairs)")


def batch_pairs(tts, kw: dict, pairs: int) -> None:
    """TEXT4 at batch_size 1 and 4, alternating; per-pair and median ratios of batch 1's time to batch 4's."""
    kw = {**kw, "split": "cut5", "split_bucket": False}  # 4 fragments in text order: one batch of 4
    tts.synthesize_result(TEXT4, "en", batch_size=4, **{**kw, "max_new_tokens": 5})  # warm-up at width 4
    s1_ratios, e2e_ratios, s2_ratios = [], [], []
    for i in range(pairs):
        got = {}
        for size in (1, 4) if i % 2 == 0 else (4, 1):
            t0 = time.perf_counter()
            res = tts.synthesize_result(TEXT4, "en", batch_size=size, **kw)
            got[size] = (time.perf_counter() - t0, res)
        (w1, r1), (w4, r4) = got[1], got[4]
        n = sum(r1.tokens_per_fragment)
        assert len(r1.fragments) == 4 and r4.tokens_per_fragment == r1.tokens_per_fragment, r1.tokens_per_fragment
        s1_ratios.append(r1.timings["s1"] / r4.timings["s1"])
        s2_ratios.append(r1.timings["s2"] / r4.timings["s2"])
        e2e_ratios.append(w1 / w4)
        print(f"pair {i + 1}: {n} tokens | s1 {r1.timings['s1']:.2f} s ({n / r1.timings['s1']:.1f} tokens/s) vs "
              f"{r4.timings['s1']:.2f} s ({n / r4.timings['s1']:.1f} tokens/s) = {s1_ratios[-1]:.2f}x | "
              f"s2 {r1.timings['s2']:.2f} vs {r4.timings['s2']:.2f} s | end to end {w1:.2f} vs {w4:.2f} s = "
              f"{e2e_ratios[-1]:.2f}x", flush=True)  # fmt: skip
    med = statistics.median
    print(f"median paired ratio, batch_size 1 time / batch_size 4 time: s1 {med(s1_ratios):.2f}x, s2 "
          f"{med(s2_ratios):.2f}x, end to end {med(e2e_ratios):.2f}x ({pairs} pairs)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="s1 weights (as TTS: auto)")
    parser.add_argument("--s2-precision", default="auto", choices=S2_PRECISIONS, help="s2 decoder")
    parser.add_argument("--batch-pairs", type=int, default=0, help="compare batch_size 1 and 4 (see above)")
    parser.add_argument("--voice", action="store_true", help="speak with a voice directory (see above)")
    parser.add_argument("--thread-pairs", type=int, default=0, help="streaming with and without a token thread")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp))
        if args.voice:
            from gsvkit.inference.voice import create_voice

            files["voice"] = Path(tmp) / "voice"
            create_voice(files["voice"], s1=files["s1"], s2=files["s2"], ref_audio=files["ref"],
                         ref_text=REF_TEXT, ref_lang="en", hubert=files["hubert"],
                         consent="synthetic benchmark clip, no person")  # fmt: skip
        child = multiprocessing.get_context("spawn").Process(target=measure, args=(args, files))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(child.exitcode)


def measure(args: argparse.Namespace, files: dict[str, Path]) -> None:
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}"
          f", load average {load:.1f}, s1 {args.precision}, s2 {args.s2_precision}")  # fmt: skip

    from gsvkit.inference.pipeline import TTS

    t0 = time.perf_counter()
    if "voice" in files:
        tts = TTS(files["voice"], precision=args.precision, s2_precision=args.s2_precision)
        ref = {}
    else:
        tts = TTS(s1=files["s1"], s2=files["s2"], hubert=files["hubert"], precision=args.precision,
                  s2_precision=args.s2_precision)  # fmt: skip
        ref = {"ref_audio": files["ref"], "ref_text": REF_TEXT, "ref_lang": "en",
               "consent": "synthetic benchmark clip, no person"}  # fmt: skip
    print(f"load s1+s2: {time.perf_counter() - t0:.2f} s")
    kw = {**ref, "split": "cut0", "max_new_tokens": args.tokens, "seed": 0, "fragment_interval": 0.0}

    if args.batch_pairs:
        batch_pairs(tts, kw, args.batch_pairs)
        return
    if args.thread_pairs:
        thread_pairs(tts, kw, args.thread_pairs)
        return
    t0 = time.perf_counter()
    first = tts.synthesize_result(TEXT, "en", **kw)  # cold: HuBERT loads, reference features computed
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    tts.cache.clear()
    tts.synthesize_result("Warm up.", "en", **{**kw, "max_new_tokens": 5})
    ref_cost = time.perf_counter() - t0
    loads = "the text front end" if "voice" in files else "HuBERT and the text front end"
    print(f"first call (loads {loads}): {cold:.2f} s; reference features plus a 5-token call: {ref_cost:.2f} s")

    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = tts.synthesize_result(TEXT, "en", **kw)
        runs.append((time.perf_counter() - t0, res))
    audio_s = len(first.audio) / first.sample_rate
    n = sum(first.tokens_per_fragment)
    total = statistics.median(r[0] for r in runs)
    s1 = statistics.median(r[1].timings["s1"] for r in runs)
    s2 = statistics.median(r[1].timings["s2"] for r in runs)
    prep = statistics.median(r[1].timings["prepare"] for r in runs)
    print(f"whole: {n} tokens = {audio_s:.2f} s of audio in {total:.2f} s -> end-to-end RTF {total / audio_s:.3f}")
    print(f"  text + cached reference {prep:.3f} s | s1 {s1:.2f} s = {n / s1:.1f} tokens/s | "
          f"s2 decode {s2:.2f} s = RTF {s2 / audio_s:.3f} | s1+s2 RTF {(s1 + s2) / audio_s:.3f}")  # fmt: skip

    stream_runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        stream = tts.stream(TEXT, "en", **kw)
        first_chunk = None
        samples = 0
        chunks = 0
        for chunk in stream:
            if first_chunk is None:
                first_chunk = time.perf_counter() - t0
            samples += len(chunk)
            chunks += 1
        stream_runs.append((first_chunk, time.perf_counter() - t0, samples, chunks))
    ttfa = statistics.median(r[0] for r in stream_runs)
    st = statistics.median(r[1] for r in stream_runs)
    sa = stream_runs[0][2] / tts.sample_rate
    print(f"stream: first audio after {ttfa:.2f} s (whole synthesis: {total:.2f} s); {stream_runs[0][3]} chunks, "
          f"{sa:.2f} s of audio in {st:.2f} s -> RTF {st / sa:.3f}")  # fmt: skip
    peak = peak_rss_mb()
    held = "voice, no HuBERT" if "voice" in files else "HuBERT loaded"
    print(f"peak RSS of the synthesising process {peak:.0f} MiB ({held})")


if __name__ == "__main__":
    main()
