"""The dataset format shared by `gsv prepare` (writer) and `gsv train` (reader).

A dataset is a directory::

    DATASET/
      manifest.jsonl                  one `Utterance` per line (UTF-8 JSON)
      clips/<id>.wav                  the clip at the s2 sampling rate (32 kHz for official models), mono
      features/<id>.hubert.safetensors  {"ssl": float [ssl_dim, T50]}   HuBERT features at 50 Hz
      features/<id>.semantic.safetensors {"codes": int64 [T25]}        semantic tokens at 25 Hz
      features/<id>.bert.safetensors  {"bert": float [1024, n_phones]}  only for zh; absent = zeros
      prepare.json                    how it was made (config, versions, input hashes)

Paths in the manifest are relative to the dataset directory so the directory can be moved.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gsvkit.errors import DataError
from gsvkit.utils.io import atomic_write_text

MANIFEST = "manifest.jsonl"
Split = Literal["train", "val"]


class Utterance(BaseModel):
    """One clip of a prepared dataset."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="unique, filesystem-safe")
    speaker: str = "speaker"
    language: str = Field(description="zh, en, ja, ko, yue (or a mixed-language mode as given)")
    text: str = Field(description="the transcript as given")
    norm_text: str = ""
    phones: list[str] = []
    phone_ids: list[int] = []
    word2ph: list[int] | None = None
    source: str = Field("", description="the original recording this clip was cut from")
    start: float = Field(0.0, ge=0, description="offset of the clip in the source, seconds")
    end: float = Field(0.0, ge=0)
    duration: float = Field(0.0, ge=0, description="clip length, seconds")
    split: Split = "train"
    clip: str = Field("", description="clip path relative to the dataset directory")

    def feature_path(self, root: Path, name: Literal["hubert", "semantic", "bert", "sv"]) -> Path:
        return Path(root) / "features" / f"{self.id}.{name}.safetensors"

    def clip_path(self, root: Path) -> Path:
        return Path(root) / (self.clip or f"clips/{self.id}.wav")


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read `manifest.jsonl` (or the dataset directory holding it); errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; run `gsv prepare` to create the dataset")
    items: list[Utterance] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            utt = Utterance.model_validate_json(line)
        except ValidationError as err:
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise DataError(f"{path}:{lineno}: invalid record ({fields})") from None
        if utt.id in seen:
            raise DataError(f"{path}:{lineno}: duplicate id {utt.id!r}")
        seen.add(utt.id)
        items.append(utt)
    return items


def write_manifest(path: str | Path, items: Iterable[Utterance]) -> None:
    """Write the manifest atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    text = "".join(json.dumps(u.model_dump(mode="json"), ensure_ascii=False) + "\n" for u in items)
    atomic_write_text(path, text)
