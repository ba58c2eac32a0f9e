"""The HTTP answer to a refused request: `HttpError` (status + JSON `message`), and how library errors map to it."""

from __future__ import annotations

from typing import Any

from gsvkit.errors import ConsentError, GsvError, SyntheticAudioError


class HttpError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers


def refusal(err: GsvError) -> HttpError:
    if isinstance(err, ConsentError):
        return HttpError(403, "consent required", str(err))
    if isinstance(err, SyntheticAudioError):
        return HttpError(422, "synthetic reference refused", str(err))
    return HttpError(400, "tts failed", str(err))
