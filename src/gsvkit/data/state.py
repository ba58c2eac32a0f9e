"""Done-markers and content hashes that make `gsv prepare` resumable and idempotent.

Every stage of every item ends by writing a small JSON marker `DATASET/.state/<stage>/<name>.json` holding the
*key* of its inputs (a hash of the input content, the options that matter, and the upstream stage's key) and
what the stage produced. A stage is skipped when its marker exists with the same key and its outputs are on
disk; otherwise it runs and the marker is replaced last. A crash therefore loses at most the item in flight, a
rerun with unchanged inputs does nothing, and a changed input (or option) recomputes only what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from gsvkit.utils.io import atomic_write_text, sha256_file

STATE_DIR = ".state"


def digest(*parts: Any) -> str:
    """Stable hash of JSON-serialisable parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class FileHashes:
    """sha256 of files, remembered by (size, mtime) so unchanged inputs are not read again on a rerun."""

    def __init__(self, root: Path) -> None:
        self.path = root / STATE_DIR / "files.json"
        try:
            self._known: dict[str, dict] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._known = {}
        self._dirty = False

    def sha(self, path: Path) -> str:
        path = Path(path).resolve()
        st = path.stat()
        entry = self._known.get(str(path))
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return entry["sha256"]
        sha = sha256_file(path)
        self._known[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        self._dirty = True
        return sha

    def tree_sha(self, path: Path) -> str:
        """Hash of a file, or of a directory's files (names and contents; hidden files ignored)."""
        path = Path(path)
        if path.is_file():
            return self.sha(path)
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts))
        return digest([(str(p.relative_to(path)), self.sha(p)) for p in files])

    def save(self) -> None:
        if self._dirty:
            atomic_write_text(self.path, json.dumps(self._known, indent=0, sort_keys=True))
            self._dirty = False


class StageState:
    """The markers of one stage: `get(name, key)` returns the stored record when it is current."""

    def __init__(self, root: Path, stage: str) -> None:
        self.dir = root / STATE_DIR / stage

    def _file(self, name: str) -> Path:
        # names are ids or hashes, already filesystem-safe; keep them short for long source names
        safe = name if len(name) <= 120 else f"{name[:80]}-{digest(name)}"
        return self.dir / f"{safe}.json"

    def get(self, name: str, key: str) -> dict | None:
        try:
            record = json.loads(self._file(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def put(self, name: str, key: str, record: dict) -> dict:
        record = {**record, "key": key}
        atomic_write_text(self._file(name), json.dumps(record, ensure_ascii=False, sort_keys=True))
        return record

    def prune(self, keep: set[str]) -> None:
        """Remove markers of names no longer in the dataset."""
        if not self.dir.is_dir():
            return
        wanted = {self._file(n).name for n in keep}
        for marker in self.dir.glob("*.json"):
            if marker.name not in wanted:
                os.remove(marker)
