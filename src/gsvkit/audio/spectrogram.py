"""Linear and mel spectrograms exactly as s2 computes them (upstream `module/mel_processing.py`).

- Linear: reflect-pad `(n_fft - hop) / 2` samples on both sides, STFT with `center=False` and a periodic Hann
  window, magnitude `sqrt(|X|^2 + 1e-8)` (so silence reads 1e-4, not 0). Frames = `len // hop` for len >= hop.
- Mel: Slaney-style filterbank (librosa's default `htk=False, norm="slaney"`, computed here in numpy, so no
  librosa at run time), then `log(clamp(mel, min=1e-5))` — the natural log.

There is no clipping: upstream only prints a warning when |wav| > 1.2; we do nothing.
Filterbanks and windows are cached per (parameters, device, dtype) in small `lru_cache`s keyed by plain values.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from gsvkit.config import S2DataConfig
from gsvkit.errors import AudioError

__all__ = ["mel_filterbank", "mel_spectrogram", "spec_to_mel", "spectrogram"]


# ----------------------------------------------------------------------------------------- Slaney mel scale
_F_SP = 200.0 / 3  # Hz per mel below 1 kHz (linear part)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-300) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_part = mel >= _MIN_LOG_MEL
    return np.where(log_part, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


@lru_cache(maxsize=8)
def _mel_filterbank_np(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)  # [n_fft//2+1]
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # [n_mels+2] band edges (Hz)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    # librosa stores the triangles as float32 first, then scales by the Slaney area norm (float64 maths):
    # two roundings, reproduced so the filterbank matches it bit for bit.
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights = (weights.astype(np.float64) * enorm[:, None]).astype(np.float32)
    weights.setflags(write=False)
    return weights  # [n_mels, n_fft//2+1]


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney mel filterbank `[n_mels, n_fft//2+1]` float32 (equal to `librosa.filters.mel` with its defaults)."""
    return _mel_filterbank_np(int(sr), int(n_fft), int(n_mels), float(fmin), None if fmax is None else float(fmax))


@lru_cache(maxsize=16)
def _mel_basis(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, device: str, dtype: str
) -> torch.Tensor:
    basis = torch.from_numpy(np.array(mel_filterbank(sr, n_fft, n_mels, fmin, fmax)))
    return basis.to(device=torch.device(device), dtype=getattr(torch, dtype))


@lru_cache(maxsize=16)
def _hann(win_length: int, device: str, dtype: str) -> torch.Tensor:
    return torch.hann_window(win_length).to(device=torch.device(device), dtype=getattr(torch, dtype))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ------------------------------------------------------------------------------------------ transforms
def spectrogram(wav: torch.Tensor, cfg: S2DataConfig) -> torch.Tensor:
    """Linear magnitude spectrogram of `wav` [B, T] (or [T]) -> [B, n_fft//2+1, T // hop]."""
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    n_fft, hop, win = cfg.filter_length, cfg.hop_length, cfg.win_length
    pad = int((n_fft - hop) / 2)
    if wav.size(-1) <= pad:
        # Reflect padding needs more samples than it adds (upstream fails here with a bare RuntimeError).
        raise AudioError(f"audio of {wav.size(-1)} samples is too short for a spectrogram: need more than {pad}")
    window = _hann(win, str(wav.device), _dtype_name(wav.dtype))
    y = torch.nn.functional.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)  # [B, T + 2*pad]
    spec = torch.stft(
        y,
        n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # [B, bins, F]
    return spec.abs().pow(2).add(1e-8).sqrt()


def spec_to_mel(spec: torch.Tensor, cfg: S2DataConfig) -> torch.Tensor:
    """Log-mel from a linear spectrogram [B, bins, F] -> [B, n_mels, F] (natural log, floor 1e-5)."""
    basis = _mel_basis(
        cfg.sampling_rate,
        cfg.filter_length,
        cfg.n_mel_channels,
        float(cfg.mel_fmin),
        None if cfg.mel_fmax is None else float(cfg.mel_fmax),
        str(spec.device),
        _dtype_name(spec.dtype),
    )  # [n_mels, bins]
    return torch.log(torch.clamp(torch.matmul(basis, spec), min=1e-5))


def mel_spectrogram(wav: torch.Tensor, cfg: S2DataConfig) -> torch.Tensor:
    """Log-mel straight from a waveform [B, T] -> [B, n_mels, T // hop] (the s2 mel loss target)."""
    return spec_to_mel(spectrogram(wav, cfg), cfg)
