"""Mel distance to ground truth: L1 between log-mel frames, aligned by dynamic time warping.

The mel is the one the s2 training loss uses (32 kHz, n_fft 2048, hop 640, 128 Slaney mel bands,
natural-log compression clamped at 1e-5), so the figure reads in the same units as `val/mel_l1` in training
logs. Synthesised speech never has the ground truth's exact timing, so when the lengths differ the frames are
paired along the cheapest monotonic path (DTW) before averaging; the duration ratio is reported beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from gsvkit.config import S2DataConfig
from gsvkit.eval.waveform import AudioInput, as_waveform


@dataclass(frozen=True)
class MelDistance:
    """`distance`: mean |log-mel difference| per band and frame (lower is closer; 0 = identical)."""

    distance: float
    duration_ratio: float  # synthesised length / ground-truth length
    frames: int  # ground-truth frames
    aligned: bool  # True when DTW paired the frames

    def to_dict(self) -> dict:
        return asdict(self)


def log_mel(wav: np.ndarray, cfg: S2DataConfig | None = None) -> np.ndarray:
    """Log-mel spectrogram of a waveform at `cfg.sampling_rate` (the s2 loss mel). [T] -> [n_mels, F]."""
    from gsvkit.audio.spectrogram import mel_spectrogram

    cfg = cfg or S2DataConfig()
    y = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]  # [1, T]
    pad = (cfg.filter_length - cfg.hop_length) // 2
    if y.shape[-1] <= pad:  # reflect padding needs more samples than the pad
        y = torch.nn.functional.pad(y, (0, pad + 1 - y.shape[-1]))
    with torch.no_grad():
        return mel_spectrogram(y, cfg)[0].numpy()  # [n_mels, F]


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path through `cost` [N, M] from (0, 0) to (N-1, M-1), steps (1,0), (0,1), (1,1).

    Returns the paired row and column indices. O(N·M) memory and time, vectorised over columns.
    """
    n, m = cost.shape
    acc = np.empty((n, m), dtype=np.float64)
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        # Best of the diagonal and vertical predecessors, then the horizontal run within row i:
        # acc[i, j] = min_k<=j (best[k] + sum(cost[i, k+1..j])) = S[j] + min_k<=j (best[k] - S[k]).
        best = cost[i] + np.minimum(acc[i - 1], np.concatenate(([np.inf], acc[i - 1, :-1])))
        s = np.cumsum(cost[i])
        acc[i] = s + np.minimum.accumulate(best - s)
    rows, cols = [n - 1], [m - 1]
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            moves = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
            k = int(np.argmin(moves))
            i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
        rows.append(i)
        cols.append(j)
    return np.array(rows[::-1]), np.array(cols[::-1])


def mel_distance_frames(mel: np.ndarray, mel_ref: np.ndarray, align: bool | None = None) -> tuple[float, bool]:
    """Mean L1 between two log-mels [n_mels, F] and [n_mels, F_ref]; DTW-aligned when `align` or lengths differ."""
    if align is None:
        align = mel.shape[1] != mel_ref.shape[1]
    if not align:
        if mel.shape != mel_ref.shape:
            raise ValueError(f"mel shapes differ ({mel.shape} vs {mel_ref.shape}); pass align=True")
        return float(np.abs(mel - mel_ref).mean()), False
    a = torch.from_numpy(mel.T.astype(np.float32))  # [F, n_mels]
    b = torch.from_numpy(mel_ref.T.astype(np.float32))  # [F_ref, n_mels]
    cost = (torch.cdist(a[None], b[None], p=1)[0] / mel.shape[0]).numpy()  # [F, F_ref], mean |diff| per band
    rows, cols = dtw_path(cost)
    return float(cost[rows, cols].mean()), True


def mel_distance(
    audio: AudioInput,
    reference: AudioInput,
    sr: int | None = None,
    ref_sr: int | None = None,
    align: bool | None = None,
    cfg: S2DataConfig | None = None,
) -> MelDistance:
    """Log-mel L1 distance of `audio` to the ground truth `reference` (paths or waveforms at `sr`/`ref_sr`)."""
    cfg = cfg or S2DataConfig()
    wav = as_waveform(audio, cfg.sampling_rate, sr)
    ref = as_waveform(reference, cfg.sampling_rate, ref_sr)
    mel, mel_ref = log_mel(wav, cfg), log_mel(ref, cfg)
    distance, aligned = mel_distance_frames(mel, mel_ref, align)
    return MelDistance(distance, len(wav) / len(ref), mel_ref.shape[1], aligned)
