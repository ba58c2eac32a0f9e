"""s1 dropout that keeps a bool mask for the backward pass.

On the CPU `nn.Dropout` multiplies by an fp32 noise tensor and keeps it (4 bytes per element) for the backward
pass; `Dropout` keeps the one-byte bool mask instead. Same semantics: each element is zeroed with probability p
and the others scaled by 1/(1-p); the backward pass applies the same mask.
"""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    """`nn.Dropout` (same `p`, `inplace` is ignored) whose backward pass keeps only a bool mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        keep = torch.rand(x.shape, device=x.device) >= self.p  # fp32 draws: exact p for fp16/bf16 x too
        return _MaskedScale.apply(x, keep, 1.0 / (1.0 - self.p))


class _MaskedScale(torch.autograd.Function):
    """x * keep * scale with `keep` bool (shaped like x); the backward pass keeps only `keep`."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None, None
