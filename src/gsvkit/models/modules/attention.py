"""VITS transformer blocks: multi-head attention with optional relative positions, the conv FFN, the encoder.

Post-norm (`x = LN(x + attn(x)); x = LN(x + ffn(x))`), masked scores set to -1e4 (not -inf), relative position
embeddings shared across heads over a window of +-4 positions, 1x1 convs for the projections. Parameter names
follow upstream `module/attentions.py` so official weights load as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gsvkit.models.modules.commons import LayerNorm

__all__ = ["FFN", "Encoder", "MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Attention of x [B, C, Tq] over c [B, C, Tk]; with `window_size` it adds relative-position terms (Tq == Tk)."""

    def __init__(
        self,
        channels: int,
        out_channels: int,
        n_heads: int,
        p_dropout: float = 0.0,
        window_size: int | None = None,
    ) -> None:
        super().__init__()
        assert channels % n_heads == 0, "channels must be divisible by n_heads"
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        self.drop = nn.Dropout(p_dropout)
        if window_size is not None:
            std = self.k_channels**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
        nn.init.xavier_uniform_(self.conv_q.weight)
        nn.init.xavier_uniform_(self.conv_k.weight)
        nn.init.xavier_uniform_(self.conv_v.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.conv_q(x), self.conv_k(c), self.conv_v(c)
        return self.conv_o(self.attention(q, k, v, attn_mask))

    def attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        b, d, t_s = key.shape
        t_t = query.size(2)
        query = query.view(b, self.n_heads, self.k_channels, t_t).transpose(2, 3)  # [B, H, Tq, dk]
        key = key.view(b, self.n_heads, self.k_channels, t_s).transpose(2, 3)  # [B, H, Tk, dk]
        value = value.view(b, self.n_heads, self.k_channels, t_s).transpose(2, 3)  # [B, H, Tk, dk]

        query = query / math.sqrt(self.k_channels)
        scores = torch.matmul(query, key.transpose(-2, -1))  # [B, H, Tq, Tk]
        if self.window_size is not None:
            assert t_s == t_t, "relative attention is only available for self-attention"
            rel_k = _relative_embeddings(self.emb_rel_k, t_s, self.window_size)  # [1, 2T-1, dk]
            rel_logits = torch.matmul(query, rel_k.unsqueeze(0).transpose(-2, -1))  # [B, H, T, 2T-1]
            scores = scores + _relative_to_absolute(rel_logits)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e4)
        p_attn = self.drop(F.softmax(scores, dim=-1))  # [B, H, Tq, Tk]
        output = torch.matmul(p_attn, value)  # [B, H, Tq, dk]
        if self.window_size is not None:
            rel_v = _relative_embeddings(self.emb_rel_v, t_s, self.window_size)
            output = output + torch.matmul(_absolute_to_relative(p_attn), rel_v.unsqueeze(0))
        return output.transpose(2, 3).contiguous().view(b, d, t_t)  # [B, C, Tq]


def _relative_embeddings(emb: torch.Tensor, length: int, w: int) -> torch.Tensor:
    """The 2*length-1 embeddings for offsets -(length-1)..(length-1) of window `w`; zeros beyond the window."""
    pad = max(length - (w + 1), 0)
    start = max((w + 1) - length, 0)
    if pad > 0:
        emb = F.pad(emb, (0, 0, pad, pad))
    return emb[:, start : start + 2 * length - 1]


def _relative_to_absolute(x: torch.Tensor) -> torch.Tensor:
    """[B, H, L, 2L-1] relative logits -> [B, H, L, L] absolute (the pad-and-reshape skew trick)."""
    b, h, length, _ = x.shape
    x = F.pad(x, (0, 1))  # [B, H, L, 2L]
    x = F.pad(x.reshape(b, h, length * 2 * length), (0, length - 1))
    return x.view(b, h, length + 1, 2 * length - 1)[:, :, :length, length - 1 :]


def _absolute_to_relative(x: torch.Tensor) -> torch.Tensor:
    """[B, H, L, L] absolute weights -> [B, H, L, 2L-1] relative."""
    b, h, length, _ = x.shape
    x = F.pad(x, (0, length - 1))  # [B, H, L, 2L-1]
    x = F.pad(x.reshape(b, h, length**2 + length * (length - 1)), (length, 0))
    return x.view(b, h, length, 2 * length)[:, :, :, 1:]


class FFN(nn.Module):
    """conv(k) -> relu -> dropout -> conv(k), 'same' padding, masked before each conv."""

    def __init__(
        self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int, p_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)
        self.drop = nn.Dropout(p_dropout)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:
            return x
        return F.pad(x, ((self.kernel_size - 1) // 2, self.kernel_size // 2))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(self._pad(x * x_mask)))
        x = self.drop(x)
        x = self.conv_2(self._pad(x * x_mask))
        return x * x_mask


class Encoder(nn.Module):
    """Stack of post-norm self-attention (relative, window 4) + FFN layers on [B, C, T] with mask [B, 1, T]."""

    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int = 1,
        p_dropout: float = 0.0,
        window_size: int = 4,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.drop = nn.Dropout(p_dropout)
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        for _ in range(n_layers):
            self.attn_layers.append(
                MultiHeadAttention(hidden_channels, hidden_channels, n_heads, p_dropout, window_size=window_size)
            )
            self.norm_layers_1.append(LayerNorm(hidden_channels))
            self.ffn_layers.append(FFN(hidden_channels, hidden_channels, filter_channels, kernel_size, p_dropout))
            self.norm_layers_2.append(LayerNorm(hidden_channels))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)  # [B, 1, T, T]
        x = x * x_mask
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2, strict=True
        ):
            x = norm1(x + self.drop(attn(x, x, attn_mask)))
            x = norm2(x + self.drop(ffn(x, x_mask)))
        return x * x_mask
