"""Atomic file writes (a crash or a full disk never leaves a half-written file under the final name) and file hashes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gsvkit.errors import DiskFullError

_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = True, size_hint: int = 0) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`.

    The temporary file lives in the same directory so the final `os.replace` is atomic on POSIX. On error the
    temporary file is removed and `path` is untouched; a full disk (whatever library was writing) becomes a
    `DiskFullError` saying how much space the write needed (`size_hint` bytes, or at least what it had written).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; choose another name or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException as err:
        written = 0
        with contextlib.suppress(OSError):
            written = tmp_path.stat().st_size
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if is_disk_full(err):
            raise disk_full(path, max(size_hint, written)) from None
        raise


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library (soundfile, safetensors) wraps it in its own error."""
    if isinstance(err, DiskFullError):
        return False  # already worded
    if isinstance(err, OSError) and err.errno in _FULL:
        return True
    text = str(err)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


def disk_full(path: Path, needed_bytes: int) -> DiskFullError:
    mb = max(1, math.ceil(needed_bytes / 1e6))
    return DiskFullError(
        f"no space left on {path.parent}: {mb} MB needed to write {path.name}; free some space or choose "
        "another output folder (nothing was written)"
    )


def _fsync_dir(directory: Path) -> None:
    # Persist the rename itself; not all platforms allow opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite=overwrite, size_hint=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
