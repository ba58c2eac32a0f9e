"""Training-time input augmentation: SpecAugment-style masks and cross-speaker SSL mixup (both off by default)."""

from __future__ import annotations

import torch

from gsvkit.training.config import MixupConfig, SpecAugmentConfig


def mask_along(x: torch.Tensor, lengths: torch.Tensor, dim: int, n_masks: int, max_frac: float) -> torch.Tensor:
    """Zero `n_masks` random bands of width U[0, max_frac*len] along `dim` (1 = channels, 2 = time) of x [B, C, T].

    Time bands stay inside each item's valid length so padding is never the only thing masked.
    """
    if n_masks == 0 or max_frac == 0:
        return x
    b, c, t = x.shape
    keep = torch.ones_like(x, dtype=torch.bool)
    for i in range(b):
        size = c if dim == 1 else int(lengths[i])
        width_max = max(1, int(size * max_frac))
        for _ in range(n_masks):
            width = int(torch.randint(0, width_max + 1, ()))
            if width == 0 or width >= size:
                continue
            start = int(torch.randint(0, size - width + 1, ()))
            if dim == 1:
                keep[i, start : start + width, :] = False
            else:
                keep[i, :, start : start + width] = False
    return x * keep


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, cfg: SpecAugmentConfig) -> torch.Tensor:
    """Time and frequency masks on x [B, C, T]; each item is masked with probability `cfg.prob`."""
    masked = mask_along(x, lengths, 2, cfg.time_masks, cfg.time_width)
    masked = mask_along(masked, lengths, 1, cfg.freq_masks, cfg.freq_width)
    if cfg.prob >= 1.0:
        return masked
    chosen = (torch.rand(x.shape[0], device=x.device) < cfg.prob)[:, None, None]  # [B, 1, 1]
    return torch.where(chosen, masked, x)


def speaker_mixup(ssl: torch.Tensor, speakers: list[str], cfg: MixupConfig) -> torch.Tensor:
    """Mix U(0, max_weight) of another speaker's SSL features (same batch) into each chosen item.

    The target stays the item's own audio, so the content encoder learns to ignore a little foreign timbre.
    Items whose batch has no other speaker are left alone (single-speaker datasets: a no-op).
    """
    if not cfg.enabled or len(set(speakers)) < 2:
        return ssl
    out = ssl.clone()
    t = ssl.shape[-1]
    for i, spk in enumerate(speakers):
        others = [j for j, s in enumerate(speakers) if s != spk]
        if not others or float(torch.rand(())) >= cfg.prob:
            continue
        j = others[int(torch.randint(0, len(others), ()))]
        w = float(torch.rand(())) * cfg.max_weight
        out[i] = (1 - w) * ssl[i] + w * ssl[j, :, :t]
    return out
