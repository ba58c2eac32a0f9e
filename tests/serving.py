"""A real uvicorn server on a free loopback port, and a fake speech backend, for the HTTP tests."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np

from gsvkit.errors import TextError

SR = 8000


class FakeStream:
    def __init__(self, chunks, sample_rate, on_close):
        self.sample_rate = sample_rate
        self._chunks = chunks
        self.delay = 0.0
        self._on_close = on_close

    def __iter__(self):
        for c in self._chunks:
            time.sleep(self.delay)
            yield c

    def close(self):
        self._on_close()


class FakeBackend:
    """Deterministic audio: 0.01 s of a 440 Hz tone per character of text."""

    def __init__(self):
        self.calls: list[dict] = []
        self.loaded: list[tuple] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Semaphore(0)
        self.closed = 0
        self.delay = 0.0

    def audio(self, text):
        n = len(text) * SR // 100
        return (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / SR)).astype(np.float32)

    def synthesize(self, text, lang, **kw):
        self.calls.append({"text": text, "lang": lang, **kw})
        self.entered.release()
        self.release.wait(30)
        if lang not in ("en", "zh", "auto"):
            raise TextError(f"language {lang!r} is not supported")
        return SR, self.audio(text)

    def stream(self, text, lang, stream=None, **kw):
        self.calls.append({"text": text, "lang": lang, "stream": stream, **kw})
        if lang not in ("en", "zh", "auto"):
            raise TextError(f"language {lang!r} is not supported")
        a = self.audio(text)

        def closed():
            self.closed += 1

        stream = FakeStream([a[i : i + 400] for i in range(0, len(a), 400)], SR, closed)
        stream.delay = self.delay
        return stream

    def load_models(self, s1=None, s2=None):
        self.loaded.append((s1, s2))

    def status(self):
        return {"loaded": True, "s1": "fake", "s2": "fake"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a background thread, on 127.0.0.1 and a free port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
