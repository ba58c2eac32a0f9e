"""The one place every synthesis passes through on its way in and out (`TTS` holds one `Guard`).

In: reference clips given for a synthesis are scored for the watermark (refused when marked, unless
`allow_synthetic_reference`), and a clip that is not a voice's own needs a consent declaration.
Out: the audio is watermarked (unless `watermark=False`, which the audit line records as "off") and one audit line
is appended per synthesis.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gsvkit.safety.audit import AuditLog, now_utc_iso, sha256_text
from gsvkit.safety.consent import check_declaration, os_user
from gsvkit.utils.io import sha256_file

WATERMARK_OFF = "off"


class Guard:
    def __init__(
        self, *, watermark: bool = True, allow_synthetic_reference: bool = False,
        audit_log: str | os.PathLike | None = None,
    ) -> None:  # fmt: skip
        self.watermark = watermark
        self.allow_synthetic_reference = allow_synthetic_reference
        self.audit = AuditLog(audit_log)
        self._checked: dict[tuple[str, int, int], str] = {}  # (path, mtime_ns, size) -> sha256 of a clean clip
        self._lock = threading.Lock()

    @property
    def watermark_id(self) -> str:
        if not self.watermark:
            return WATERMARK_OFF
        from gsvkit.safety.watermark import get_watermarker

        return get_watermarker().model_id

    def check_reference(self, path: Path) -> str:
        """Refuse a watermarked clip (unless allowed); returns its sha256. Cached per file version."""
        from gsvkit.errors import AudioError

        try:
            st = path.stat()
        except OSError:
            raise AudioError(f"{path}: reference audio not found") from None
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._checked.get(key)
        if hit is not None:
            return hit
        if not self.allow_synthetic_reference:
            from gsvkit.safety.watermark import refuse_synthetic

            override = "allow_synthetic_reference=True (--allow-synthetic-reference)"
            refuse_synthetic(path, "this reference clip", override)
        digest = sha256_file(path)
        with self._lock:
            self._checked[key] = digest
        return digest

    def admit(self, given: Sequence[Path], own: Sequence[Path], consent: str | None) -> tuple[list[str], str | None]:
        """Check the clips a caller gave; those not in `own` (a voice's files) make it zero-shot, needing consent.

        Returns (sha256 of each given clip, the declaration or None)."""
        own_set = {p.resolve() for p in own}
        foreign = [p for p in given if p.resolve() not in own_set]
        declaration = check_declaration(consent, str(foreign[0])) if foreign else None
        return [self.check_reference(p) for p in given], declaration

    def mark(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        if not self.watermark:
            return audio
        from gsvkit.safety.watermark import get_watermarker

        return get_watermarker().apply(audio, sample_rate)

    def record(self, **fields: Any) -> str:
        """Append one audit line; returns its id. `text` is stored only as its sha256 and length."""
        text = fields.pop("text", "")
        rec = {
            "id": uuid.uuid4().hex,
            "time": now_utc_iso(),
            "user": fields.pop("user", None) or os_user(),
            "text_sha256": sha256_text(text),
            "text_chars": len(text),
            "watermark": self.watermark_id,
            **fields,
        }
        self.audit.append(rec)
        return rec["id"]
