"""Audio bytes for HTTP replies: 16-bit PCM as wav, raw (little-endian, mono) or ogg/vorbis.

Streaming wav starts with a header whose sizes are unknown (0xFFFFFFFF, as ffmpeg writes for pipes) and goes on
with raw PCM; streaming ogg sends every chunk as its own complete ogg stream (a chained ogg file), as upstream does.
"""

from __future__ import annotations

import io
import struct

import numpy as np


def pcm16(wav: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 (clipped, scale 32767: 1.0 must not wrap around)."""
    return (np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)


def wav_header(sample_rate: int, n_samples: int | None = None) -> bytes:
    """RIFF/WAVE header for mono 16-bit PCM; `None` samples = unknown length (streaming)."""
    data = 0xFFFFFFFF if n_samples is None else 2 * n_samples
    riff = 0xFFFFFFFF if n_samples is None else 36 + data
    return (
        b"RIFF" + struct.pack("<I", riff) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data" + struct.pack("<I", data)
    )  # fmt: skip


def encode(wav: np.ndarray, sample_rate: int, media_type: str) -> bytes:
    """A whole reply body in `media_type` (wav, raw or ogg)."""
    pcm = pcm16(wav)
    if media_type == "raw":
        return pcm.tobytes()
    if media_type == "wav":
        return wav_header(sample_rate, len(pcm)) + pcm.tobytes()
    if media_type == "ogg":
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, pcm, sample_rate, format="OGG", subtype="VORBIS")
        return buf.getvalue()
    raise ValueError(f"unsupported media type {media_type!r}; use wav, raw or ogg")


def encode_chunk(wav: np.ndarray, sample_rate: int, media_type: str) -> bytes:
    """One streamed chunk after the first bytes (`stream_start`)."""
    if media_type in ("wav", "raw"):
        return pcm16(wav).tobytes()
    return encode(wav, sample_rate, media_type)


def stream_start(sample_rate: int, media_type: str) -> bytes:
    """Bytes a stream begins with before any audio."""
    return wav_header(sample_rate) if media_type == "wav" else b""
