"""Hostile and broken input files, generated at test time (nothing that runs code is ever committed).

Each builder writes one file under a folder and returns its path. `tests/test_hostile_*.py` load them through
the public functions and `benchmarks/hostile_battery.py` runs the same builders through the CLI, in
subprocesses with a timeout, counting tracebacks, hangs and peak memory.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import wave
import zipfile
from pathlib import Path

import numpy as np
import torch


def laughs_pickle(levels: int = 40) -> bytes:
    """A pickle of `levels` nested tuples, each holding the previous one twice through the memo: 2**levels
    leaves in a few hundred bytes (the "billion laughs" of pickles)."""
    out = bytearray(b"\x80\x02")
    out += b"K\x00q\x00"  # BININT1 0, BINPUT 0
    for i in range(levels):
        out += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86"  # BINGET i, BINGET i, TUPLE2
        out += b"q" + bytes([i + 1])  # BINPUT i+1
    out += b"."
    return bytes(out)


def memo_bomb_pickle() -> bytes:
    """LONG_BINPUT at index 2**32-1: the C unpickler would size its memo table by it (tens of GB)."""
    return b"\x80\x02K\x00r\xff\xff\xff\xff."


def deep_pickle(depth: int = 100_000) -> bytes:
    """A list nested `depth` levels deep (EMPTY_LIST then APPEND, no recursion while unpickling)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def torch_zip(path: Path, pkl: bytes, entries: dict[str, bytes] | None = None, compress: bool = False) -> Path:
    """A torch-style zip archive whose `archive/data.pkl` is `pkl`."""
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as zf:
        zf.writestr("archive/data.pkl", pkl)
        for name, data in (entries or {}).items():
            zf.writestr(f"archive/{name}", data)
    return path


def laughs_checkpoint(path: Path, levels: int = 40) -> Path:
    return torch_zip(path, laughs_pickle(levels))


def zip_bomb_checkpoint(path: Path, inflated_mb: int = 200) -> Path:
    """A small deflated archive whose one storage entry inflates to `inflated_mb` MB of zeros."""
    pkl = pickle.dumps({"weight": 0}, protocol=2)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        with zf.open("archive/data/0", "w", force_zip64=True) as f:
            block = bytes(1024 * 1024)
            for _ in range(inflated_mb):
                f.write(block)
    return path


def lying_zip_checkpoint(path: Path) -> Path:
    """A stored entry whose central directory claims 1 GB (declared size differs from the real one)."""
    torch_zip(path, pickle.dumps({"weight": 0}, protocol=2), {"data/0": b"\0" * 64})
    raw = bytearray(path.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")  # the last central-directory record is the storage entry's
    raw[cd + 24 : cd + 28] = struct.pack("<I", 1 << 30)  # uncompressed size
    path.write_bytes(bytes(raw))
    return path


def safetensors_file(path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors.torch import save_file

    save_file(tensors or {"w": torch.zeros(4)}, str(path), metadata=metadata)
    return path


def nested_metadata_safetensors(path: Path, depth: int = 100_000) -> Path:
    """A safetensors header whose `__metadata__` is a JSON value nested `depth` levels deep."""
    header = ('{"__metadata__":' + "[" * depth + "]" * depth + "}").encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def huge_architecture_safetensors(path: Path, n_layer: int = 5000) -> Path:
    """A gsvkit-looking s1 file whose stored config claims `n_layer` layers."""
    from gsvkit.checkpoint import format as fmt
    from gsvkit.config import S1Config

    config = S1Config().model_dump(mode="json")
    config["model"]["n_layer"] = n_layer
    meta = {
        "format": fmt.FORMAT_NAME,
        "format_version": fmt.FORMAT_VERSION,
        "kind": "s1",
        "version": "v2",
        "config": json.dumps(config),
        "info": "{}",
    }
    return safetensors_file(path, meta)


def yaml_laughs(path: Path, levels: int = 9, width: int = 9) -> Path:
    """A ~600-byte YAML whose aliases expand to width**levels scalars."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join(f"*a{i - 1}" for _ in range(width))
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("kind: s1")
    lines.append(f"model: {{n_layer: *a{levels}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def wav(path: Path, sr: int, samples: int, *, truncate_to: float | None = None) -> Path:
    """A 16-bit mono WAV of syllable-like noise bursts; `truncate_to` cuts the file (header intact) to that part."""
    rng = np.random.default_rng(0)
    t = np.arange(samples) / max(sr, 1)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)  # four "syllables" a second
    pcm = (0.2 * envelope * rng.standard_normal(samples) * 32767).clip(-32767, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    data = buf.getvalue()
    if truncate_to is not None:
        data = data[: 44 + int((len(data) - 44) * truncate_to)]
    path.write_bytes(data)
    return path
