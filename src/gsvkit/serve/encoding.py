"""Audio bytes for HTTP replies: 16-bit PCM as wav, raw (little-endian, mono), ogg/vorbis, flac, mp3 or ogg/opus.

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


# media type -> libsndfile (format, subtype) for the compressed ones
SOUNDFILE_FORMATS = {
    "ogg": ("OGG", "VORBIS"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the only rates Opus encodes; others are resampled to 48 kHz


def encode(wav: np.ndarray, sample_rate: int, media_type: str) -> bytes:
    """A whole reply body in `media_type` (wav, raw, ogg, flac, mp3 or opus)."""
    if media_type == "opus" and sample_rate not in OPUS_RATES:
        import soxr

        wav, sample_rate = soxr.resample(np.asarray(wav, dtype=np.float32), sample_rate, 48000), 48000
    pcm = pcm16(wav)
    if media_type == "raw":
        return pcm.tobytes()
    if media_type == "wav":
        return wav_header(sample_rate, len(pcm)) + pcm.tobytes()
    if media_type in SOUNDFILE_FORMATS:
        import soundfile as sf

        fmt, subtype = SOUNDFILE_FORMATS[media_type]
        buf = io.BytesIO()
        sf.write(buf, pcm, sample_rate, format=fmt, subtype=subtype)
        return buf.getvalue()
    raise ValueError(f"unsupported media type {media_type!r}; use wav, raw, ogg, flac, mp3 or opus")


def encode_chunk(wav: np.ndarray, sample_rate: int, media_type: str) -> bytes:
    """One streamed chunk after the first bytes (`stream_start`)."""
    if media_type in ("wav", "raw"):
        return pcm16(wav).tobytes()
    return encode(wav, sample_rate, media_type)


def stream_start(sample_rate: int, media_type: str) -> bytes:
    """Bytes a stream begins with before any audio."""
    return wav_header(sample_rate) if media_type == "wav" else b""
