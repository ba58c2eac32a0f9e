"""Server throughput: requests/s, audio seconds per second and p95 latency of `POST /tts` at 1, 4 and 16 clients.

What it builds: the official-size models of benchmarks/infer.py (synthetic weights, EOS out of reach) behind
`create_app` (the app `gsv serve` runs) on 127.0.0.1, with every request capped at `--tokens` semantic tokens per
fragment (the HTTP API has no such field; a thin wrapper adds it, nothing else changes). Each client sends
`--requests` requests one after another; all clients start together.

Run: `python benchmarks/serve_load.py` (`--clients 1,4,16`, `--requests 2`, `--tokens 25`, `--max-jobs auto`,
`--threads N`, `--precision int8`, `--s2-precision auto`). `--max-jobs` and `--threads` mean what they mean to
`gsv serve` (`serve_jobs`): `auto` without `--threads` runs one job per core, the running jobs splitting the cores;
`--max-jobs 2 --threads 1` fixes two jobs of one thread each. Nothing is asserted; on a shared machine compare rows
of one run only.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer import build  # noqa: E402  (the same synthetic official-size models as benchmarks/infer.py)

from gsvkit.models.s1.gpt import PRECISIONS  # noqa: E402
from gsvkit.models.s2.sovits import S2_PRECISIONS  # noqa: E402


class Capped:
    """`TTS` with `max_new_tokens` fixed on every call."""

    def __init__(self, tts: Any, tokens: int) -> None:
        self.tts, self.tokens = tts, tokens

    def synthesize(self, text: str, lang: str, **kw: Any):
        return self.tts.synthesize(text, lang, **{**kw, "max_new_tokens": self.tokens})

    def stream(self, text: str, lang: str, **kw: Any):
        return self.tts.stream(text, lang, **{**kw, "max_new_tokens": self.tokens})

    def load_models(self, s1=None, s2=None) -> None:
        self.tts.load_models(s1, s2)

    def status(self) -> dict[str, Any]:
        return self.tts.status()


def _post(url: str, body: dict[str, Any]) -> tuple[float, float]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=3600) as r:
        data = r.read()
    wav, sr = sf.read(io.BytesIO(data))
    return time.perf_counter() - t0, len(wav) / sr


def load(url: str, body: dict[str, Any], clients: int, requests: int) -> dict[str, float]:
    results: list[tuple[float, float]] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(requests):
            got = _post(url, body)
            with lock:
                results.append(got)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(r[0] for r in results)
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    return {"clients": clients, "requests": len(results), "requests_per_s": len(results) / wall,
            "audio_s_per_s": sum(r[1] for r in results) / wall, "p50_s": statistics.median(lat),
            "p95_s": p95}  # fmt: skip


def main() -> None:
    import uvicorn

    from gsvkit.inference.pipeline import TTS
    from gsvkit.serve.cli import serve_jobs
    from gsvkit.serve.http import ServerSettings, create_app

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=2, help="requests per client")
    p.add_argument("--tokens", type=int, default=25, help="semantic tokens per fragment (25 = 1 s of audio)")
    p.add_argument("--max-jobs", default="auto", help="the server's --max-jobs: auto or a number")
    p.add_argument("--threads", type=int, default=None, help="the server's --threads")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)  # as `gsv serve`
    p.add_argument("--s2-precision", default="auto", choices=S2_PRECISIONS)
    args = p.parse_args()
    plan = serve_jobs(args.max_jobs, args.threads, "cpu")
    plan.apply()  # as `gsv serve` does
    counts = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp))
        tts = TTS(s1=files["s1"], s2=files["s2"], hubert=files["hubert"], precision=args.precision,
                  s2_precision=args.s2_precision, watermark=False)  # fmt: skip
        settings = ServerSettings(ref_dirs=[Path(tmp)], max_jobs=plan.jobs, max_queue=max(counts),
                                  shared_cores=plan.shared_cores)  # fmt: skip
        app = create_app(Capped(tts, args.tokens), settings)
        server = uvicorn.Server(uvicorn.Config(app, port=0, log_level="warning"))
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/tts"
        body = {"text": "The quick brown fox jumps over the lazy dog.", "text_lang": "en",
                "ref_audio_path": str(files["ref"]), "prompt_text": "This is a reference clip of four seconds.",
                "prompt_lang": "en", "consent": "synthetic benchmark clip", "seed": 0}  # fmt: skip
        _post(url, body)  # warm-up: the reference enters the cache
        each = f"sharing {plan.shared_cores} cores" if plan.shared_cores else f"{torch.get_num_threads()} threads each"
        print(f"max_jobs {plan.jobs} ({each}), {args.tokens} tokens/fragment, s1 {args.precision}, "
              f"s2 {args.s2_precision}")  # fmt: skip
        print(f"{'clients':>8}{'requests':>10}{'req/s':>8}{'audio s/s':>11}{'p50 s':>8}{'p95 s':>8}")
        for n in counts:
            r = load(url, body, n, args.requests)
            print(f"{n:>8}{r['requests']:>10}{r['requests_per_s']:>8.2f}{r['audio_s_per_s']:>11.2f}"
                  f"{r['p50_s']:>8.1f}{r['p95_s']:>8.1f}", flush=True)  # fmt: skip
        server.should_exit = True
        th.join(10)


if __name__ == "__main__":
    main()
