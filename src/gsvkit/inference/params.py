"""Typed, range-checked synthesis parameters shared by the Python API, the CLI, the HTTP server and the web UI.

Defaults are upstream's (`TTS_infer_pack/TTS.py` and `api_v2.py`). A value out of range raises `ParameterError`
whose message names every bad field, so a typo in a script, a query string or a form gives the same answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gsvkit.errors import GsvError, TextError

SplitMethod = Literal["cut0", "cut1", "cut2", "cut3", "cut4", "cut5"]
SPLIT_METHODS: tuple[str, ...] = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")

# Languages each model version was trained on (upstream `TTS_Config.v1_languages` / `v2_languages`).
LANGUAGES: dict[str, tuple[str, ...]] = {
    "v1": ("auto", "en", "zh", "ja", "all_zh", "all_ja"),
    "v2": ("auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko"),
}
LANGUAGES["v2Pro"] = LANGUAGES["v2ProPlus"] = LANGUAGES["v2"]  # same text front end and GPT as v2
LANGUAGES["v3"] = LANGUAGES["v4"] = LANGUAGES["v2"]

# Longest text one call accepts by default; a whole book should be fed chapter by chapter.
DEFAULT_MAX_TEXT_CHARS = 20_000


# Semantic tokens per second of speech (the 25 Hz HuBERT frame rate every supported version uses).
TOKENS_PER_SECOND = 25

# Upstream `api_v2.py` names of the fields it calls otherwise; the HTTP request uses these names.
UPSTREAM_NAMES: dict[str, str] = {"speed": "speed_factor", "split": "text_split_method"}


def _ui(low: float, high: float, step: float) -> dict[str, Any]:
    """The range a web UI slider offers (narrower than what validation accepts)."""
    return {"slider": [low, high, step]}


class ParameterError(GsvError):
    """A synthesis parameter outside its allowed range (the message names the field and the range)."""


class SynthesisParams(BaseModel):
    """Sampling and rendering options of one synthesis call."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    top_k: int = Field(15, ge=1, le=1024, description="sample among the k most likely tokens",
                       json_schema_extra=_ui(1, 100, 1))  # fmt: skip
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass (1 = off)",
                         json_schema_extra=_ui(0.05, 1.0, 0.05))  # fmt: skip
    temperature: float = Field(1.0, gt=0.0, le=5.0, description="softmax temperature",
                               json_schema_extra=_ui(0.05, 2.0, 0.05))  # fmt: skip
    repetition_penalty: float = Field(1.35, ge=1.0, le=10.0, description="penalty on tokens already produced",
                                      json_schema_extra=_ui(1.0, 2.0, 0.05))  # fmt: skip
    speed: float = Field(1.0, ge=0.25, le=4.0, description="speaking rate (s2 stretches its latent)",
                         json_schema_extra=_ui(0.5, 2.0, 0.05))  # fmt: skip
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="random seed: the same seed gives the same audio (None: a fresh one)"
    )
    split: SplitMethod = Field("cut5", description="text split method, cut0 (none) to cut5 (every punctuation)")
    batch_size: int = Field(
        1, ge=1, le=64,
        description="fragments generated together by s1 (torch backend) and decoded together by s2; 1 when streaming",
    )  # fmt: skip
    batch_threshold: float = Field(0.75, ge=0.0, le=1.0, description="length-similarity threshold of a batch")
    split_bucket: bool = Field(True, description="group fragments of similar length into batches")
    fragment_interval: float = Field(0.3, ge=0.0, le=5.0, description="seconds of silence after each fragment",
                                     json_schema_extra=_ui(0.0, 2.0, 0.05))  # fmt: skip
    noise_scale: float = Field(0.5, ge=0.0, le=2.0, description="s2 prior noise (0 = deterministic decode)")
    max_new_tokens: int = Field(
        1500, ge=1, le=5000, description=f"cap on semantic tokens per fragment ({TOKENS_PER_SECOND} per second)"
    )
    sample_steps: int | None = Field(
        None,
        ge=1,
        le=128,
        description="v3/v4 flow-matching steps (None = 32 for v3, 8 for v4; other families ignore it)",
    )


class StreamParams(BaseModel):
    """How streaming cuts the growing token sequence into decode windows (counts are semantic tokens)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    first_chunk_tokens: int = Field(
        8, ge=2, le=500, description="tokens before the first chunk (latency: audio starts after these + lookahead)"
    )
    chunk_tokens: int = Field(
        48, ge=2, le=500, description="largest chunk: after the first, each chunk doubles up to this many tokens"
    )
    left_context_tokens: int = Field(16, ge=0, le=500, description="already-spoken tokens re-decoded as context")
    lookahead_tokens: int = Field(2, ge=0, le=50, description="newest tokens decoded but held back for context")
    crossfade_tokens: int = Field(1, ge=0, le=50, description="overlap between chunks, faded linearly")
    threaded: bool | None = Field(
        None,
        description="generate tokens in a background thread while s2 decodes; None: where the device has room for "
        "both (a GPU, or a CPU with at least twice torch's threads in cores; see `inference.batching.threaded`)",
    )

    @model_validator(mode="after")
    def _check(self) -> StreamParams:
        if self.crossfade_tokens > min(self.first_chunk_tokens, self.chunk_tokens):
            raise ValueError(
                f"crossfade_tokens={self.crossfade_tokens} must not exceed first_chunk_tokens and chunk_tokens"
            )
        return self


def _messages(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(parts)


def make_params(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """Validate `values` into `model`, raising `ParameterError` that names each bad field."""
    try:
        return model(**values)
    except ValidationError as err:
        raise ParameterError(f"invalid parameter: {_messages(err)}") from None


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The values actually given (None means "not given": the voice or the model's default decides)."""
    return {k: v for k, v in values.items() if v is not None}


def check_language(lang: str, version: str, what: str = "language") -> str:
    """Lower-case `lang` and check the model version supports it (`TextError` otherwise)."""
    norm = (lang or "").strip().lower()
    allowed = LANGUAGES.get(version, LANGUAGES["v2"])
    if norm not in allowed:
        raise TextError(f"{what} {lang!r} is not supported by {version} models; use one of {', '.join(allowed)}")
    return norm
