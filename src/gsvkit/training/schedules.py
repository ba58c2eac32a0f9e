"""Learning-rate schedules: s1 warmup + cosine, s2 exponential decay per epoch (upstream's ExponentialLR)."""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ExponentialLR, LambdaLR, ReduceLROnPlateau

from gsvkit.training.config import PlateauConfig


def warmup_cosine(step: int, peak: float, init: float, end: float, warmup: int, decay: int) -> float:
    """Learning rate at optimizer step `step`: linear init→peak over `warmup`, cosine peak→end over `decay`.

    Upstream meant this shape (WarmupCosineLRSchedule) but its scheduler never changed the rate; here it does.
    After warmup + decay steps the rate stays at `end`.
    """
    if warmup > 0 and step < warmup:
        return init + (peak - init) * step / warmup
    if decay <= 0:
        return peak
    progress = min(1.0, (step - warmup) / decay)
    return end + 0.5 * (peak - end) * (1.0 + math.cos(math.pi * progress))


def s1_scheduler(opt: Optimizer, peak: float, init: float, end: float, warmup: int, decay: int) -> LambdaLR:
    """A per-step LambdaLR following `warmup_cosine` (the optimizer's lr must be `peak`)."""
    return LambdaLR(opt, lambda step: warmup_cosine(step, peak, init, end, warmup, decay) / peak)


def s2_scheduler(opt: Optimizer, gamma: float) -> ExponentialLR:
    """Upstream's per-epoch exponential decay (gamma 0.999875)."""
    return ExponentialLR(opt, gamma=gamma)


def plateau_scheduler(opt: Optimizer, cfg: PlateauConfig, mode: Literal["min", "max"]) -> ReduceLROnPlateau:
    return ReduceLROnPlateau(opt, mode=mode, factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr)
