"""What bounds the server's work: the job gate (run, wait or 503 at once) and the request-body limit (413)."""

from __future__ import annotations

import json
import threading
from typing import Any


class JobGate:
    """At most `workers` jobs run and `queue` wait; `try_enter` says no at once when both are full."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self._run = threading.Semaphore(workers)
        self._lock = threading.Lock()
        self.admitted = 0
        self.running = 0

    def try_enter(self) -> bool:
        with self._lock:
            if self.admitted >= self.capacity:
                return False
            self.admitted += 1
            return True

    def start(self) -> None:
        """Block (in a worker thread) until a run slot is free."""
        self._run.acquire()
        with self._lock:
            self.running += 1

    def finish(self, started: bool) -> None:
        with self._lock:
            self.admitted -= 1
            if started:
                self.running -= 1
        if started:
            self._run.release()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"running": self.running, "waiting": self.admitted - self.running, "capacity": self.capacity}


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes with 413, before they are parsed or stored."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Any) -> None:
        body = json.dumps({"message": f"request body over the {self.limit}-byte limit"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
