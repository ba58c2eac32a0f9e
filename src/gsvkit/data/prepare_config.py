"""The typed configuration of `gsv prepare` (saved into the dataset's prepare.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gsvkit.config import ConfigError
from gsvkit.limits import read_yaml_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SlicerOptions(_Strict):
    """Silence slicing of recordings without a transcript (upstream's webui defaults)."""

    threshold: float = Field(-34.0, le=0, description="RMS below this (dB) counts as silence")
    min_length: int = Field(4000, gt=0, description="a clip is at least this long before it may end (ms)")
    min_interval: int = Field(300, gt=0, description="shortest silence that can end a clip (ms)")
    hop_size: int = Field(10, gt=0, description="loudness curve resolution (ms)")
    max_sil_kept: int = Field(500, gt=0, description="most silence kept around a cut (ms)")
    max_length: float = Field(20.0, gt=0, description="clips longer than this (s) are cut again at the quietest point")

    @model_validator(mode="after")
    def _check(self) -> SlicerOptions:
        if not self.min_length >= self.min_interval >= self.hop_size:
            raise ValueError("slicer options need min_length >= min_interval >= hop_size")
        if self.max_sil_kept < self.hop_size:
            raise ValueError("slicer option max_sil_kept must be >= hop_size")
        return self


class PrepareConfig(_Strict):
    """Everything `gsv prepare` needs; `gsv prepare --config prepare.yaml` reads the same fields."""

    inputs: list[str] = Field(min_length=1, description="audio files, folders, or transcript files")
    out: str = Field(min_length=1, description="the dataset directory to create or update")
    language: str = Field("en", description="language of transcripts that do not name one")
    speaker: str = Field("speaker", min_length=1, description="speaker of utterances that do not name one")
    transcripts: list[str] = Field([], description="transcript files (.list, .csv, .tsv, .jsonl)")
    hubert: str | None = Field(None, description="local chinese-hubert-base directory (transformers format)")
    s2: str | None = Field(None, description="s2 (SoVITS) weights whose quantizer gives the semantic tokens")
    bert: str | None = Field(None, description="local chinese-roberta-wwm-ext-large directory (zh only)")
    asr_model: str | None = Field(None, description="faster-whisper model directory for untranscribed audio")
    sv: str | None = Field(
        None, description="v2Pro/v2ProPlus: speaker-verification model file (sv/pretrained_eres2netv2w24s4ep4.ckpt)"
    )
    text_version: Literal["v1", "v2"] = "v2"
    sample_rate: int | None = Field(None, gt=0, description="clip rate; None = the s2 model's, else 32000")
    min_duration: float = Field(0.6, ge=0, description="shorter clips are dropped (s)")
    max_duration: float = Field(54.0, gt=0, description="transcribed recordings longer than this are dropped (s)")
    slicer: SlicerOptions = SlicerOptions()
    loudness: Literal["peak", "lufs"] = "peak"
    target_lufs: float = Field(-23.0, le=0)
    denoise: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=1)
    val: list[str] | None = Field(None, description="explicit validation ids (overrides val_fraction)")
    seed: int = 0
    workers: int = Field(1, ge=1, description="processes for decoding and slicing")
    device: str = Field("auto", description="torch device for HuBERT/BERT/s2: auto, cpu, cuda, cuda:1 ...")
    upstream_layout: bool = False
    strict: bool = False
    allow_synthetic: bool = Field(False, description="accept recordings that carry the speech-synthesis watermark")

    def clip_rate(self, s2_rate: int | None) -> int:
        return self.sample_rate or s2_rate or 32000


def load_prepare_config(path: str | Path, overrides: dict | None = None) -> PrepareConfig:
    """Read a prepare YAML/JSON file; `overrides` (from the command line) win over the file's fields."""
    path = Path(path)
    data = read_yaml_file(path, ConfigError, "config file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data.pop("kind", None)
    for key, value in (overrides or {}).items():
        if key == "slicer" and isinstance(value, dict):
            data["slicer"] = {**data.get("slicer", {}), **value}
        else:
            data[key] = value
    return prepare_config_from_dict(data, str(path))


def prepare_config_from_dict(data: dict, source: str = "<prepare config>") -> PrepareConfig:
    try:
        return PrepareConfig.model_validate(data)
    except ValidationError as err:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{source}: invalid prepare config\n" + "\n".join(lines)) from None
