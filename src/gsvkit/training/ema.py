"""Exponential moving average of model weights (used for validation and export when enabled)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA(nn.Module):
    """Shadow copy of a module's floating-point parameters and buffers: `s = d*s + (1-d)*w` after each step.

    Being a module, its tensors follow the LightningModule across devices and are part of its state_dict, so the
    average survives checkpoints and resumes. Before `start_step` the shadow simply copies the weights.

    With `warmup`, the n-th averaging step uses `min(decay, (1 + n) / (10 + n))` (the warm-up of TensorFlow's and
    timm's EMA): at decay 0.999 a plain average would stay near the starting weights for thousands of steps, and
    validation and export, which use the average, would judge untrained weights.
    """

    updates: torch.Tensor  # buffer: the number of averaging steps taken

    def __init__(self, model: nn.Module, decay: float = 0.999, start_step: int = 0, warmup: bool = True) -> None:
        super().__init__()
        self.decay = decay
        self.start_step = start_step
        self.warmup = warmup
        self._names = [k for k, v in model.state_dict().items() if torch.is_floating_point(v)]
        for i, k in enumerate(self._names):
            self.register_buffer(f"w{i}", model.state_dict()[k].detach().clone())
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def _shadow(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"w{i}") for i, k in enumerate(self._names)}

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimizer step `step` (1-based)."""
        if step < self.start_step:
            return 0.0
        n = step - self.start_step
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        current = model.state_dict()
        d = self.decay_at(step)
        for k, s in self._shadow().items():
            s.mul_(d).add_(current[k].detach().to(s.dtype), alpha=1.0 - d)
        self.updates += 1

    def averaged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with averaged floating-point tensors."""
        state = dict(model.state_dict())
        state.update({k: v.clone() for k, v in self._shadow().items()})
        return state

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into `model` (validation), restoring the raw ones after."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in set(self._names)}
        model.load_state_dict(self._shadow(), strict=False)
        try:
            yield
        finally:
            model.load_state_dict(backup, strict=False)
