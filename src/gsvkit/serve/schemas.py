"""HTTP request and response bodies (pydantic), with upstream `api_v2.py`'s parameter names and defaults.

`sample_steps` sets the v3/v4 flow-matching steps; `super_sampling` (upstream's optional v3 24→48 kHz stage) and
its batching switch (`parallel_infer`) are accepted and ignored, so existing clients keep working.
`streaming_mode` 0/false returns one file; 1/true, 2 and 3 all stream audio while s1 is still generating (see
`gsvkit.inference.streaming`), with `min_chunk_length` tokens per chunk and `overlap_length` tokens of cross-fade.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from gsvkit.inference.params import UPSTREAM_NAMES, StreamParams, SynthesisParams

MediaType = Literal["wav", "raw", "ogg"]
MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "raw": "audio/raw", "ogg": "audio/ogg"}


# Accepted for upstream clients and ignored (v3/v4 switches and its batching switch), unless a field of that name
# is a synthesis parameter here.
_IGNORED_UPSTREAM: dict[str, Any] = {
    "parallel_infer": (bool, True),
    "sample_steps": (int, Field(32, ge=1, le=128, description="ignored (v3/v4 only upstream)")),
    "super_sampling": (bool, Field(False, description="ignored (v3/v4 only upstream)")),
}


def _synthesis_fields() -> dict[str, Any]:
    """`SynthesisParams` fields under upstream's names (same types, defaults, ranges and help)."""
    fields = {k: v for k, v in _IGNORED_UPSTREAM.items() if k not in SynthesisParams.model_fields}
    for name, info in SynthesisParams.model_fields.items():
        fields[UPSTREAM_NAMES.get(name, name)] = (info.annotation, copy.copy(info))
    return fields


_SynthesisFields: type[BaseModel] = create_model("SynthesisFields", **_synthesis_fields())


class TTSRequest(_SynthesisFields):
    """One synthesis request (`/tts` GET query or POST JSON body)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="text to speak")
    text_lang: str = Field(min_length=1, description="language of `text` (auto, zh, en, ja, ko, yue, all_zh, ...)")
    ref_audio_path: str | None = Field(
        None, description="reference clip on the server (inside its allowed folders); default: the voice's own"
    )
    aux_ref_audio_paths: list[str] = Field(default_factory=list, max_length=8, description="extra timbre clips")
    prompt_text: str = Field("", max_length=1000, description="transcript of the reference clip")
    prompt_lang: str | None = Field(None, description="language of `prompt_text`")
    voice: str | None = Field(None, description="voice name from /voices (default: the server's current models)")
    consent: str | None = Field(
        None, max_length=1000, description="required with a reference clip: how its speaker agreed to this (audited)"
    )
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1 draws a random seed")
    media_type: MediaType = "wav"
    streaming_mode: int = Field(0, ge=0, le=3, description="0/false: one file; 1/true, 2, 3: stream chunks")
    overlap_length: int = Field(2, ge=0, le=50, description="streaming: cross-fade in semantic tokens")
    min_chunk_length: int = Field(16, ge=2, le=500, description="streaming: new semantic tokens per chunk")

    if TYPE_CHECKING:  # the synthesis fields are made at import time, so a type checker cannot see them

        def __init__(self, **data: Any) -> None: ...

    @field_validator("streaming_mode", mode="before")
    @classmethod
    def _streaming_mode(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return int(v.strip().lower() == "true")
        return v

    @property
    def streaming(self) -> bool:
        return self.streaming_mode > 0

    def synthesis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `TTS.synthesize` / `TTS.stream` (the backend call)."""
        return {
            "text": self.text,
            "lang": self.text_lang,
            "ref_audio": self.ref_audio_path or None,
            "ref_text": self.prompt_text or None,
            "ref_lang": self.prompt_lang or None,
            "aux_refs": tuple(self.aux_ref_audio_paths),
            "voice": self.voice or None,
            **{name: getattr(self, UPSTREAM_NAMES.get(name, name)) for name in SynthesisParams.model_fields},
            "seed": None if self.seed < 0 else self.seed,
            "consent": self.consent or None,
        }

    def stream_kwargs(self) -> dict[str, Any]:
        chunk = self.min_chunk_length
        fade = min(self.overlap_length, chunk)
        first = StreamParams.model_fields["first_chunk_tokens"].default
        return {"first_chunk_tokens": max(fade, min(chunk, first)), "chunk_tokens": chunk, "crossfade_tokens": fade}


class TTSForm(TTSRequest):
    """`/tts/upload` form fields: those of `TTSRequest` (the file part `ref_audio` travels beside them)."""

    model_config = ConfigDict(extra="ignore")


class WeightsPair(BaseModel):
    """Both model files of a switch, relative to (or inside) the server's models folder."""

    gpt_weights_path: str = Field(min_length=1)
    sovits_weights_path: str = Field(min_length=1)


class Message(BaseModel):
    """Error or status reply. `Exception` mirrors upstream's field for failed synthesis."""

    model_config = ConfigDict(populate_by_name=True)

    message: str
    detail: Any = None


class VoiceSummary(BaseModel):
    name: str
    version: str
    languages: list[str]
    reference_text: str
    reference_language: str
    description: str = ""
    speaker: str | None = None
    consent: str


class VoicesResponse(BaseModel):
    voices: list[VoiceSummary]
    errors: dict[str, str] = Field(default_factory=dict, description="voice folders that failed to load, and why")


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "no_models"]
    version: str
    models: dict[str, Any]
    jobs: dict[str, int]
