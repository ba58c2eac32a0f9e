"""MelStyleEncoder: the reference (timbre/style) encoder that turns a reference spectrogram into `ge`.

Faithful to upstream `module/modules.py::MelStyleEncoder` (from StyleSpeech), including its quirks:
attention scores are scaled by sqrt(d_model), not sqrt(d_k); masked key positions get -inf; the temporal average
divides by the length before it sums.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MelStyleEncoder"]


class LinearNorm(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, out_channels, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(F.softplus(x))


class ConvNorm(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        assert kernel_size % 2 == 1
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Conv1dGLU(nn.Module):
    """Residual conv + gated linear unit on [B, C, T]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = ConvNorm(in_channels, 2 * out_channels, kernel_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv1(x), self.out_channels, dim=1)
        return x + self.dropout(a * torch.sigmoid(b))


class StyleAttention(nn.Module):
    """Multi-head self-attention on [B, T, C] with a residual; scores / sqrt(d_model) (upstream's temperature)."""

    def __init__(self, n_head: int, d_model: int, d_k: int, d_v: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_head, self.d_k, self.d_v = n_head, d_k, d_v
        self.w_qs = nn.Linear(d_model, n_head * d_k)
        self.w_ks = nn.Linear(d_model, n_head * d_k)
        self.w_vs = nn.Linear(d_model, n_head * d_v)
        self.temperature = math.sqrt(d_model)
        self.attn_dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(n_head * d_v, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        residual = x
        q = self.w_qs(x).view(b, t, self.n_head, self.d_k).permute(2, 0, 1, 3).reshape(-1, t, self.d_k)
        k = self.w_ks(x).view(b, t, self.n_head, self.d_k).permute(2, 0, 1, 3).reshape(-1, t, self.d_k)
        v = self.w_vs(x).view(b, t, self.n_head, self.d_v).permute(2, 0, 1, 3).reshape(-1, t, self.d_v)
        attn = torch.bmm(q, k.transpose(1, 2)) / self.temperature  # [H*B, T, T]
        if mask is not None:
            attn = attn.masked_fill(mask.repeat(self.n_head, 1, 1), float("-inf"))
        attn = self.attn_dropout(torch.softmax(attn, dim=2))
        out = torch.bmm(attn, v)  # [H*B, T, d_v]
        out = out.view(self.n_head, b, t, self.d_v).permute(1, 2, 0, 3).reshape(b, t, -1)
        return self.dropout(self.fc(out)) + residual


class MelStyleEncoder(nn.Module):
    """Spectrogram frames [B, n_bins, T] (+ mask [B, 1, T], 1 = valid) -> style vector [B, style_vector_dim, 1]."""

    def __init__(
        self,
        n_mel_channels: int = 80,
        style_hidden: int = 128,
        style_vector_dim: int = 256,
        style_kernel_size: int = 5,
        style_head: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.spectral = nn.Sequential(
            LinearNorm(n_mel_channels, style_hidden),
            Mish(),
            nn.Dropout(dropout),
            LinearNorm(style_hidden, style_hidden),
            Mish(),
            nn.Dropout(dropout),
        )
        self.temporal = nn.Sequential(
            Conv1dGLU(style_hidden, style_hidden, style_kernel_size, dropout),
            Conv1dGLU(style_hidden, style_hidden, style_kernel_size, dropout),
        )
        d_head = style_hidden // style_head
        self.slf_attn = StyleAttention(style_head, style_hidden, d_head, d_head, dropout)
        self.fc = LinearNorm(style_hidden, style_vector_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x.transpose(1, 2)  # [B, T, bins]
        pad = (mask.int() == 0).squeeze(1) if mask is not None else None  # [B, T], True = padding
        attn_mask = pad.unsqueeze(1).expand(-1, x.size(1), -1) if pad is not None else None  # [B, T, T]
        x = self.spectral(x)
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)  # [B, T, hidden]
        if pad is not None:
            x = x.masked_fill(pad.unsqueeze(-1), 0)
        x = self.fc(self.slf_attn(x, mask=attn_mask))  # [B, T, out]
        return _temporal_avg_pool(x, pad).unsqueeze(-1)


def _temporal_avg_pool(x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid frames of [B, T, C] -> [B, C]; like upstream it divides by the length before summing."""
    if pad is None:
        return torch.mean(x, dim=1)
    lengths = (~pad).sum(dim=1).unsqueeze(1)  # [B, 1]
    x = x.masked_fill(pad.unsqueeze(-1), 0)
    return torch.div(x.float(), lengths.unsqueeze(1)).sum(dim=1).to(x.dtype)
