"""Normalising-flow pieces of the VITS prior: the affine coupling layer, the channel flip and their stack."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gsvkit.models.modules.wavenet import WN

__all__ = ["Flip", "ResidualCouplingBlock", "ResidualCouplingLayer"]


class ResidualCouplingLayer(nn.Module):
    """Affine coupling: x1 <- m(x0) + x1 * exp(logs(x0)); with mean_only, logs = 0 (volume preserving).

    forward(reverse=False) returns (x, logdet [B]); reverse=True returns x only.
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        p_dropout: float = 0.0,
        gin_channels: int = 0,
        mean_only: bool = False,
    ) -> None:
        super().__init__()
        assert channels % 2 == 0, "channels should be divisible by 2"
        self.half_channels = channels // 2
        self.mean_only = mean_only
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels, p_dropout)
        self.post = nn.Conv1d(hidden_channels, self.half_channels * (2 - mean_only), 1)
        # Zero init: the flow starts as the identity.
        for p in self.post.parameters():  # weight and bias
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None, reverse: bool = False):
        x0, x1 = torch.split(x, [self.half_channels] * 2, 1)
        h = self.enc(self.pre(x0) * x_mask, x_mask, g=g)
        stats = self.post(h) * x_mask
        if self.mean_only:
            m, logs = stats, torch.zeros_like(stats)
        else:
            m, logs = torch.split(stats, [self.half_channels] * 2, 1)
        if not reverse:
            x1 = m + x1 * torch.exp(logs) * x_mask
            return torch.cat([x0, x1], 1), torch.sum(logs, [1, 2])
        x1 = (x1 - m) * torch.exp(-logs) * x_mask
        return torch.cat([x0, x1], 1)


class Flip(nn.Module):
    """Reverse the channel order so the next coupling layer transforms the other half."""

    def forward(self, x: torch.Tensor, *args, reverse: bool = False, **kwargs):
        x = torch.flip(x, [1])
        if not reverse:
            return x, torch.zeros(x.size(0), dtype=x.dtype, device=x.device)
        return x


class ResidualCouplingBlock(nn.Module):
    """n_flows x (coupling layer, Flip); reverse=True runs them backwards (inference). `layer()` makes one coupling
    layer (for SoVITS a mean-only `ResidualCouplingLayer`)."""

    def __init__(self, n_flows: int, layer: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(layer())
            self.flows.append(Flip())

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None, reverse: bool = False
    ) -> torch.Tensor:
        if not reverse:
            for flow in self.flows:
                x, _ = flow(x, x_mask, g=g, reverse=False)
        else:
            for flow in reversed(self.flows):
                x = flow(x, x_mask, g=g, reverse=True)
        return x
