"""Path confinement: a file named in a request must lie inside an allowed folder (symlinks and `..` included).

Uploaded clips are stored in the server's upload folder, of which only the newest few are kept.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from gsvkit.serve.errors import HttpError

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pth")
AUDIO_UPLOAD_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


def confine(root: Path | None, value: str, what: str, suffixes: tuple[str, ...]) -> Path:
    """Resolve `value` inside `root`; refuse (403) anything that lands outside it, symlinks included."""
    if root is None:
        raise HttpError(403, f"{what}: not allowed (the server was started without a folder for it)")
    if not value or "\x00" in value:
        raise HttpError(400, f"{what} is required")
    base = root.resolve()
    p = Path(value)
    target = (p if p.is_absolute() else base / p).resolve()
    if target != base and base not in target.parents:
        raise HttpError(403, f"{what} {value!r} is outside the allowed folder")
    if target.suffix.lower() not in suffixes:
        raise HttpError(400, f"{what} {value!r}: expected one of {', '.join(suffixes)}")
    if not target.is_file():
        raise HttpError(404, f"{what} {value!r} not found")
    return target


def confine_any(roots: list[Path], value: str, what: str, suffixes: tuple[str, ...]) -> Path:
    if not roots:
        raise HttpError(403, f"{what}: server-side paths are not allowed; upload the clip to /tts/upload instead")
    first: HttpError | None = None
    for root in roots:
        try:
            return confine(root, value, what, suffixes)
        except HttpError as err:
            first = first or err
            if err.status != 403:
                raise
    assert first is not None
    raise first


def store_upload(folder: Path, path: Path, data: bytes, keep: int) -> None:
    from gsvkit.utils.io import atomic_write_bytes

    atomic_write_bytes(path, data)
    files = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in files[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()
