"""Consent records: a voice's structured `provenance.consent`, and the declaration a zero-shot clone needs.

A voice's consent says who agreed to be cloned, when, for what, and who recorded that agreement. Older voices hold
a free-text string there; it is read as the record's `statement` (the other fields unknown), so every voice.json
written before stays loadable, and the next write stores the structured form.

Cloning from an arbitrary reference clip (zero-shot: `gsv synth --ref`, `/tts/upload`, the web page's upload) has
no voice and so no record: the caller must declare, in words, that the speaker consented. The declaration goes into
the audit line of that synthesis.
"""

from __future__ import annotations

import getpass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gsvkit.errors import ConsentError
from gsvkit.safety.audit import now_utc_iso

MIN_DECLARATION_CHARS = 8  # long enough to say something ("the speaker agreed"), short enough not to annoy


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


class Consent(BaseModel):
    """Who consented to being cloned, when, to what, and who recorded it. Extra keys are kept."""

    model_config = ConfigDict(extra="allow")

    speaker: str | None = Field(None, description="the person who consented (whose voice this is)")
    given: str | None = Field(None, description="when consent was given (ISO-8601 date or time)")
    scope: str | None = Field(None, description="what the voice may be used for")
    recorded_by: str | None = Field(None, description="who recorded the consent in this voice")
    recorded_at: str | None = Field(None, description="ISO-8601 UTC time it was recorded")
    statement: str = Field("", description="the consent in words (how it was given, where the proof is kept)")

    def describe(self) -> str:
        """One line for listings."""
        parts = [self.statement] if self.statement else []
        if self.speaker:
            parts.append(f"speaker {self.speaker}")
        if self.given:
            parts.append(f"given {self.given}")
        if self.scope:
            parts.append(f"scope {self.scope}")
        if self.recorded_by:
            parts.append(f"recorded by {self.recorded_by}")
        return "; ".join(parts)


def coerce_consent(value: Any) -> Any:
    """Pydantic before-validator: an old free-text consent string becomes `Consent(statement=...)`."""
    if isinstance(value, str):
        return {"statement": value}
    return value


def new_consent(
    statement: str | Consent | dict,
    *,
    speaker: str | None = None,
    given: str | None = None,
    scope: str | None = None,
    recorded_by: str | None = None,
) -> Consent:
    """A consent record for a new voice; refuses one that says nothing (no statement and no speaker)."""
    if isinstance(statement, Consent):
        rec = statement
    elif isinstance(statement, dict):
        rec = Consent.model_validate(statement)
    else:
        rec = Consent(statement=(statement or "").strip())
    rec = rec.model_copy(
        update={
            "speaker": rec.speaker or speaker,
            "given": rec.given or given,
            "scope": rec.scope or scope,
            "recorded_by": rec.recorded_by or recorded_by or os_user(),
            "recorded_at": rec.recorded_at or now_utc_iso(),
        }
    )
    if not rec.statement.strip() and not rec.speaker:
        raise ConsentError(
            "a voice needs a consent record: who agreed to be cloned, when and how (--consent TEXT, "
            "--consent-speaker NAME, --consent-date DATE, --consent-scope TEXT)"
        )
    return rec


def check_declaration(declaration: str | None, reference: str) -> str:
    """The zero-shot consent declaration, stripped; `ConsentError` when it is missing or too short to mean much."""
    text = (declaration or "").strip()
    if len(text) < MIN_DECLARATION_CHARS:
        raise ConsentError(
            f"cloning from the reference {reference} needs a consent declaration: state that the speaker agreed "
            f"(CLI --consent TEXT, HTTP/web field `consent`, Python consent=...), e.g. "
            f'"Alice agreed in writing on 2026-01-05"; it is written to the audit log'
        )
    return text
