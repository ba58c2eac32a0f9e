"""gsvkit's own weight file: one `.safetensors` per model, self-describing, checksummed, no pickle.

Layout (plain safetensors): 8-byte little-endian header length N, N bytes of JSON header, tensor data. The
header's `__metadata__` (all strings) carries:

| key              | value                                                                 |
|------------------|-----------------------------------------------------------------------|
| `format`         | `"gsvkit"`                                                            |
| `format_version` | `"1"`                                                                 |
| `kind`           | `s1` (GPT), `s2` (SoVITS generator) or `s2d` (SoVITS discriminator)  |
| `version`        | model version, `v1` or `v2`                                           |
| `config`         | the full typed config as JSON (`gsvkit.config`)                       |
| `info`           | JSON object: training info (epoch, step, metrics, source file, ...)   |
| `content_sha256` | checksum of the tensors (`content_digest`), so a flipped byte anywhere is caught |
| `created_by`     | `gsvkit <version>`                                                    |

The checksum runs over the tensors in sorted-name order, each as `name\\0DTYPE\\0shape\\n` followed by its raw
little-endian bytes, so it does not depend on how safetensors lays the data out and can be recomputed from the
file's byte ranges alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gsvkit.errors import CheckpointError

FORMAT_NAME = "gsvkit"
FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit; anything larger is a corrupted length field

DTYPE_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
CODE_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str  # safetensors dtype code, e.g. "F16"
    shape: tuple[int, ...]
    start: int  # byte range inside the data section
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class RawHeader:
    """The parsed safetensors header of a file, plus the sizes needed to check it is complete."""

    metadata: dict[str, str]
    tensors: dict[str, TensorEntry]
    data_start: int  # file offset of the data section (8 + N)
    data_expected: int  # bytes of tensor data the header describes
    data_found: int  # bytes actually present after the header


def _entry_line(name: str, dtype: str, shape: Iterable[int]) -> bytes:
    return f"{name}\0{dtype}\0{','.join(str(int(s)) for s in shape)}\n".encode()


def content_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the tensors as they will be stored (see module docstring)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(_entry_line(name, DTYPE_CODES[t.dtype], t.shape))
        if t.numel():
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def prepare_tensors(state_dict: Mapping[str, Any], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Detached, CPU, contiguous tensors, floats cast to `dtype` if given, no two sharing memory."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        t = value.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if t.dtype not in DTYPE_CODES:
            raise CheckpointError(f"state_dict entry {name!r} has unsupported dtype {t.dtype}")
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()  # tied/aliased tensors: safetensors stores each one separately
        elif ptr is not None:
            seen.add(ptr)
        out[name] = t
    return out


def write_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file at `path` (the caller provides atomicity)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def read_raw_header(path: Path) -> RawHeader:
    """Parse and size-check the header; raises `CheckpointError` on truncation or a damaged header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated: file has {size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: corrupted: header length field says {n} bytes")
        raw = f.read(n)
    if len(raw) < n:
        raise CheckpointError(f"{path}: truncated: expected a {n}-byte header, found {len(raw)} bytes")
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not a JSON object")
        tensors: dict[str, TensorEntry] = {}
        for name, spec in header.items():
            start, end = (int(x) for x in spec["data_offsets"])
            tensors[name] = TensorEntry(str(spec["dtype"]), tuple(int(s) for s in spec["shape"]), start, end)
    except RecursionError:
        raise CheckpointError(f"{path}: corrupted header (nested too deeply)") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupted header ({err})") from None
    for name, e in tensors.items():
        itemsize = CODE_ITEMSIZE.get(e.dtype)
        if itemsize is None or e.end - e.start != e.numel * itemsize or e.start < 0:
            raise CheckpointError(f"{path}: corrupted header entry for tensor '{name}' ({e.dtype}, {e.shape})")
    expected = max((e.end for e in tensors.values()), default=0)
    return RawHeader(
        metadata={str(k): str(v) for k, v in metadata.items()},
        tensors=tensors,
        data_start=8 + n,
        data_expected=expected,
        data_found=size - 8 - n,
    )


def check_complete(path: Path, raw: RawHeader) -> None:
    if raw.data_found < raw.data_expected:
        raise CheckpointError(
            f"{path}: truncated: expected {raw.data_expected} bytes of tensor data, found {raw.data_found}"
        )
    if raw.data_found > raw.data_expected:
        extra = raw.data_found - raw.data_expected
        raise CheckpointError(f"{path}: corrupted: {extra} unexpected bytes after the tensor data")


def file_digest(path: Path, raw: RawHeader) -> str:
    """Recompute `content_digest` from the file's bytes (streamed, in sorted-name order)."""
    h = hashlib.sha256()
    chunk = 16 * 1024 * 1024
    with open(path, "rb") as f:
        for name in sorted(raw.tensors):
            e = raw.tensors[name]
            h.update(_entry_line(name, e.dtype, e.shape))
            f.seek(raw.data_start + e.start)
            left = e.end - e.start
            while left > 0:
                block = f.read(min(chunk, left))
                if not block:
                    raise CheckpointError(f"{path}: truncated while reading tensor '{name}'")
                h.update(block)
                left -= len(block)
    return h.hexdigest()


def verify(path: Path, raw: RawHeader) -> None:
    """Size and checksum check of a gsvkit file; raises `CheckpointError` saying what is wrong."""
    check_complete(path, raw)
    stored = raw.metadata.get("content_sha256")
    if not stored:
        raise CheckpointError(f"{path}: no content checksum in the metadata; the file was not written by gsvkit")
    actual = file_digest(path, raw)
    if actual != stored:
        raise CheckpointError(
            f"{path}: corrupted: tensor data checksum mismatch (stored {stored[:16]}…, computed {actual[:16]}…); "
            "the file was damaged after it was written — restore it from a backup or re-export it"
        )


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path}: corrupted safetensors data ({err})") from None
