"""WN: the non-causal WaveNet stack of VITS (gated dilated convs with skip sums), used by the flow and enc_q."""

from __future__ import annotations

import torch
from torch import nn

from gsvkit.models.modules.commons import fused_add_tanh_sigmoid_multiply
from gsvkit.models.modules.weight_norm import weight_norm

__all__ = ["WN"]


class WN(nn.Module):
    """x [B, H, T] (+ global condition g [B, gin, 1]) -> sum of skip outputs [B, H, T], masked.

    The conditioning conv produces 2*H channels per layer in one go; layer i reads its slice.
    """

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
        p_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        assert kernel_size % 2 == 1, "WN needs an odd kernel"
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.gin_channels = gin_channels
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.drop = nn.Dropout(p_dropout)
        if gin_channels:
            self.cond_layer = weight_norm(nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1))
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            conv = nn.Conv1d(hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation, padding=padding)
            self.in_layers.append(weight_norm(conv))
            # The last layer only feeds the skip sum, so it needs no residual half.
            res_skip_channels = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(hidden_channels, res_skip_channels, 1)))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        h = self.hidden_channels
        output = torch.zeros_like(x)
        if g is not None:
            g = self.cond_layer(g)  # [B, 2*H*n_layers, 1]
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)  # [B, 2H, T]
            g_l = g[:, i * 2 * h : (i + 1) * 2 * h] if g is not None else torch.zeros_like(x_in)
            acts = self.drop(fused_add_tanh_sigmoid_multiply(x_in, g_l, h))
            res_skip = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                x = (x + res_skip[:, :h]) * x_mask
                output = output + res_skip[:, h:]
            else:
                output = output + res_skip
        return output * x_mask
