"""The audit log: one JSON line per synthesis, appended, never rewritten.

Each line holds the time (UTC), who asked (the server key's name, or the OS user for the CLI and Python), the voice
(name and the sha256 of its s2 weights) or the reference clip's sha256 for a zero-shot clone, the consent declared
for it, the sha256 and length of the text (not the text itself), the seed, the length of the audio, and the
watermark applied (the model id, or "off"). Lines are written with one `write` on a file opened in append mode under
an exclusive lock, so concurrent writers (server threads, several processes) never interleave or truncate lines.

Where: `$GSVKIT_AUDIT_LOG` when set, else `$XDG_STATE_HOME/gsvkit/audit.jsonl` (`~/.local/state/gsvkit/`); the
server and `gsv synth` take `--audit-log PATH`. `gsv audit` shows it.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gsvkit.errors import DataError

ENV_VAR = "GSVKIT_AUDIT_LOG"
_lock = threading.Lock()


def default_audit_path() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "gsvkit" / "audit.jsonl"


def now_utc_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AuditLog:
    """An append-only JSONL file."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_audit_path()

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as err:
            raise DataError(
                f"{self.path}: cannot write the audit log ({err.strerror}); give a writable --audit-log PATH"
            ) from None
        with _lock:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)  # closing drops the lock

    def read(self) -> Iterator[dict[str, Any]]:
        """The records, oldest first; a line that is not JSON is reported by number."""
        if not self.path.is_file():
            raise DataError(f"{self.path}: no audit log here (nothing synthesized yet, or another --log PATH)")
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(f"{self.path}: line {no} is not a JSON record (the log was edited?)") from None
                if isinstance(rec, dict):
                    yield rec
