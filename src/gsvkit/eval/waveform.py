"""Audio input for the scorers: a file path or an in-memory waveform, returned mono float32 at a given rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gsvkit.errors import AudioError

AudioInput = str | Path | np.ndarray


def as_waveform(audio: AudioInput, sr: int, source_sr: int | None = None) -> np.ndarray:
    """Return `audio` as mono float32 at `sr` Hz.

    `audio` is a path (anything `gsvkit.audio.io.load_audio` reads) or a waveform [T] or [T, C]; a waveform
    needs `source_sr` unless it is already at `sr`.
    """
    from gsvkit.audio.io import load_audio, resample

    if isinstance(audio, (str, Path)):
        return load_audio(audio, sr)
    wav = np.asarray(audio, dtype=np.float32)
    if wav.ndim == 2:  # [T, C] as soundfile returns it
        wav = wav.mean(axis=1)
    if wav.ndim != 1:
        raise AudioError(f"expected a mono waveform [T] or [T, C], got shape {tuple(wav.shape)}")
    if wav.size == 0:
        raise AudioError("the waveform is empty")
    if not np.isfinite(wav).all():
        raise AudioError("the waveform contains NaN or infinite samples")
    if source_sr and source_sr != sr:
        wav = resample(wav, source_sr, sr)
    return np.ascontiguousarray(wav, dtype=np.float32)
