"""The mels of the v3/v4 families: what the flow decoder predicts and the vocoder turns into sound.

v3: 24 kHz, n_fft = win = 1024, hop 256, 100 Slaney bands (BigVGAN-v2's input); v4: 32 kHz, 1280/320/100 (the
v4 vocoder's input). Both are the s2 log-mel (reflect pad (n_fft - hop)/2, centre off, natural log, floor
1e-5), computed by `gsvkit.audio.spectrogram`. The flow decoder works on a normalised copy: log-mel in
[-12, 2] maps linearly to [-1, 1] (upstream's norm_spec / denorm_spec).
"""

from __future__ import annotations

import torch

from gsvkit.audio.spectrogram import mel_spectrogram
from gsvkit.config import S2DataConfig

__all__ = ["FLOW_MEL", "denorm_mel", "flow_mel", "norm_mel"]

FLOW_MEL = {
    "v3": S2DataConfig(sampling_rate=24000, filter_length=1024, hop_length=256, win_length=1024, n_mel_channels=100),
    "v4": S2DataConfig(sampling_rate=32000, filter_length=1280, hop_length=320, win_length=1280, n_mel_channels=100),
}
SPEC_MIN, SPEC_MAX = -12.0, 2.0


def flow_mel(wav: torch.Tensor, version: str) -> torch.Tensor:
    """wav [B, T] at FLOW_MEL[version].sampling_rate -> log-mel [B, 100, T // hop] (not normalised)."""
    return mel_spectrogram(wav, FLOW_MEL[version])


def norm_mel(mel: torch.Tensor) -> torch.Tensor:
    return (mel - SPEC_MIN) / (SPEC_MAX - SPEC_MIN) * 2 - 1


def denorm_mel(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2 * (SPEC_MAX - SPEC_MIN) + SPEC_MIN
