"""Path confinement: a file named in a request must lie inside an allowed folder (symlinks and `..` included).

Uploaded clips are stored in the server's upload folder, of which only the newest few are kept.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from gsvkit.serve.errors import HttpError

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pth")
AUDIO_UPLOAD_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


MAX_PATH_CHARS = 1024  # a path named in a request; a longer one is refused (400) before the file system sees it
MAX_NAME_CHARS = 255  # one component of it (the usual file-system limit)


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 else repr(value[:60]) + f"… ({len(value)} characters)"


def check_request_path(value: str, what: str) -> None:
    """400 for empty, NUL-carrying and over-long paths (the OS would fail with "File name too long")."""
    if not value or "\x00" in value:
        raise HttpError(400, f"{what} is required")
    if len(value) > MAX_PATH_CHARS or any(len(part) > MAX_NAME_CHARS for part in value.replace("\\", "/").split("/")):
        raise HttpError(
            400,
            f"{what} {_shown(value)} is too long (limits MAX_PATH_CHARS={MAX_PATH_CHARS} characters and "
            f"MAX_NAME_CHARS={MAX_NAME_CHARS} per name, in gsvkit.serve.paths)",
        )


def confine(root: Path | None, value: str, what: str, suffixes: tuple[str, ...]) -> Path:
    """Resolve `value` inside `root`; refuse (403) anything that lands outside it, symlinks included."""
    if root is None:
        raise HttpError(403, f"{what}: not allowed (the server was started without a folder for it)")
    check_request_path(value, what)
    try:
        base = root.resolve()
        p = Path(value)
        target = (p if p.is_absolute() else base / p).resolve()
        inside = target == base or base in target.parents
        exists = inside and target.is_file()
    except OSError as err:
        raise HttpError(400, f"{what} {_shown(value)}: not a usable path ({err.strerror})") from None
    if not inside:
        raise HttpError(403, f"{what} {_shown(value)} is outside the allowed folder")
    if target.suffix.lower() not in suffixes:
        raise HttpError(400, f"{what} {_shown(value)}: expected one of {', '.join(suffixes)}")
    if not exists:
        raise HttpError(404, f"{what} {_shown(value)} not found")
    return target


def confine_any(roots: list[Path], value: str, what: str, suffixes: tuple[str, ...]) -> Path:
    """The first of `roots` that holds `value`; 404 names every folder searched, 403 when it lies in none."""
    if not roots:
        raise HttpError(403, f"{what}: server-side paths are not allowed; upload the clip to /tts/upload instead")
    errors: list[HttpError] = []
    for root in roots:
        try:
            return confine(root, value, what, suffixes)
        except HttpError as err:
            if err.status == 400:
                raise
            errors.append(err)
    if any(err.status == 404 for err in errors):
        searched = ", ".join(r.name or str(r) for r in roots)
        raise HttpError(
            404, f"{what} {_shown(value)} not found in the folders searched ({len(roots)}: {searched})"
        )
    raise errors[0]


def store_upload(folder: Path, path: Path, data: bytes, keep: int) -> None:
    from gsvkit.utils.io import atomic_write_bytes

    atomic_write_bytes(path, data)
    files = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in files[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()
