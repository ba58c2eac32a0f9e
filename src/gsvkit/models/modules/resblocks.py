"""HiFi-GAN residual blocks (types 1 and 2) with weight-normed dilated convs; shape-preserving on [B, C, T] or on
the [B, C, 1, T] layout of `gsvkit.models.modules.conv` (masks then [B, 1, 1, T])."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gsvkit.models.modules.commons import LRELU_SLOPE, get_padding
from gsvkit.models.modules.conv import Conv1d
from gsvkit.models.modules.weight_norm import weight_norm

__all__ = ["ResBlock1", "ResBlock2"]


def _wn_conv(channels: int, kernel_size: int, dilation: int) -> Conv1d:
    # Upstream's normal(0, 0.01) init is applied after weight norm and so never reaches g/v: torch's default
    # init is what it effectively trains from, and what we keep.
    padding = get_padding(kernel_size, dilation)
    return weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=dilation, padding=padding))


class ResBlock1(nn.Module):
    """Three (lrelu -> dilated conv -> lrelu -> conv) residual branches; shape-preserving on [B, C, T]."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList([_wn_conv(channels, kernel_size, d) for d in dilation])
        self.convs2 = nn.ModuleList([_wn_conv(channels, kernel_size, 1) for _ in dilation])

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None = None) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            xt = F.leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            # In place where autograd allows it (a convolution's output is not saved for its backward pass): fewer
            # full-length temporaries at the decoder's widest stages.
            xt = F.leaky_relu(c1(xt), LRELU_SLOPE, inplace=True)
            if x_mask is not None:
                xt = xt * x_mask
            x = c2(xt).add_(x)
        return x * x_mask if x_mask is not None else x


class ResBlock2(nn.Module):
    """Two (lrelu -> dilated conv) residual branches."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList([_wn_conv(channels, kernel_size, d) for d in dilation])

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None = None) -> torch.Tensor:
        for c in self.convs:
            xt = F.leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            x = c(xt).add_(x)
        return x * x_mask if x_mask is not None else x
