"""The v3/v4 velocity estimator: an F5-TTS-style diffusion transformer (DiT), named as upstream's state dict.

    x (noisy mel) [B, 100, T], cond (prompt mel, zero past the prompt) [B, 100, T], text (features) [B, 512, T]
      text --+sinusoid positions --ConvNeXt-V2 x conv_layers--> text_embed [B, T, 512]
      proj(cat(x, cond, text_embed)) + ConvPosEmb --> h [B, T, dim]
      t_emb = time_embed(t) + d_embed(d)                        (step size d: the shortcut-model conditioning)
      h --depth x DiTBlock(AdaLN-zero(t_emb), rotary self-attention, GELU-tanh FF)--> AdaLN-final --> v [B, T, 100]

Upstream quirk kept on purpose: the rotary embedding (dim_head wide) is applied to q/k *before* they are split
into heads, so only the first `dim_head` channels — the first head — are rotated.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from gsvkit.config import FlowDecoderConfig
from gsvkit.models.modules import sequence_mask

__all__ = ["DiT"]


# ------------------------------------------------------------------------------------------- embeddings
def sinusoid_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """t [B] -> [B, dim] (sin half, cos half), frequencies exp(-log(1e4) * i / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    arg = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((arg.sin(), arg.cos()), dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B] -> [B, dim]
        return self.time_mlp(sinusoid_embedding(t, self.freq_dim).to(t.dtype))


def position_table(dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """[length, dim]: cos of the `dim/2` rotary angles, then their sin (the text-position table)."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(length).float(), freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class RotaryEmbedding(nn.Module):
    """Angles for rotary attention; `inv_freq` is a saved buffer in the official files."""

    inv_freq: torch.Tensor

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, seq_len: int) -> torch.Tensor:
        t = torch.arange(seq_len, device=self.inv_freq.device).type_as(self.inv_freq)
        freqs = torch.outer(t, self.inv_freq)  # [T, dim/2]
        return freqs.repeat_interleave(2, dim=-1)  # [T, dim]: each angle for one (even, odd) pair


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the first freqs.shape[-1] channels of x [B, T, C] pairwise; the rest pass through."""
    rot = freqs.shape[-1]
    head, tail = x[..., :rot], x[..., rot:]
    pairs = head.unflatten(-1, (-1, 2))
    rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat((head * freqs.cos() + rotated_half * freqs.sin(), tail), dim=-1)


# ----------------------------------------------------------------------------------------------- blocks
class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2) over the time axis of [B, T, C]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=1, keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.grn = GRN(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C]
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        return x + self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(h)))))


class TextEmbedding(nn.Module):
    """Condition features [B, T, C] + fixed sinusoid positions -> ConvNeXt-V2 blocks."""

    max_pos = 4096
    freqs_cis: torch.Tensor  # buffer [max_pos, dim], not saved

    def __init__(self, dim: int, conv_layers: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("freqs_cis", position_table(dim, self.max_pos), persistent=False)
        self.text_blocks = nn.Sequential(*[ConvNeXtV2Block(dim, dim * 2) for _ in range(conv_layers)])

    def reset_buffers(self) -> None:
        """Recompute the (unsaved) position table, e.g. after building on the meta device."""
        device = cast(ConvNeXtV2Block, self.text_blocks[0]).pwconv1.weight.device if len(self.text_blocks) else None
        self.freqs_cis = position_table(self.dim, self.max_pos).to(device)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        if len(self.text_blocks) == 0:
            return text
        pos = torch.arange(text.size(1), device=text.device).clamp(max=self.max_pos - 1)
        return self.text_blocks(text + self.freqs_cis[pos])


class ConvPositionEmbedding(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C]
        return self.conv1d(x.transpose(1, 2)).transpose(1, 2)


class InputEmbedding(nn.Module):
    def __init__(self, mel_dim: int, text_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(mel_dim * 2 + text_dim, out_dim)
        self.conv_pos_embed = ConvPositionEmbedding(out_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
        h = self.proj(torch.cat((x, cond, text_embed), dim=-1))
        return self.conv_pos_embed(h) + h


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        q = apply_rotary(self.to_q(x), rope)
        k = apply_rotary(self.to_k(x), rope)
        v = self.to_v(x)
        q, k, v = (z.view(b, -1, self.heads, z.size(-1) // self.heads).transpose(1, 2) for z in (q, k, v))
        attn_mask = mask[:, None, None, :].expand(b, self.heads, q.size(2), k.size(2))  # [B, H, T, T] keys only
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = self.to_out[1](self.to_out[0](y.transpose(1, 2).flatten(2)))
        return y.masked_fill(~mask.unsqueeze(-1), 0.0)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh")), nn.Dropout(0.0), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class AdaLayerNormZero(nn.Module):
    def __init__(self, dim: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(dim, dim * chunks)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.chunk(self.linear(F.silu(emb)), self.chunks, dim=1)


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int) -> None:
        super().__init__()
        self.attn_norm = AdaLayerNormZero(dim, 6)
        self.attn = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim, dim * ff_mult)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.attn_norm(t)  # each [B, dim]
        norm = F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale_a[:, None]) + shift_a[:, None]
        x = x + gate_a.unsqueeze(1) * self.attn(norm, mask, rope)
        norm = F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale_f[:, None]) + shift_f[:, None]
        return x + gate_f.unsqueeze(1) * self.ff(norm)


# ------------------------------------------------------------------------------------------------ model
class DiT(nn.Module):
    """Velocity v(x_t, t, d | prompt, features) of the flow-matching mel decoder."""

    def __init__(self, cfg: FlowDecoderConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.time_embed = TimestepEmbedding(dim)
        self.d_embed = TimestepEmbedding(dim)
        self.text_embed = TextEmbedding(cfg.bridge_channels, cfg.conv_layers)
        self.input_embed = InputEmbedding(cfg.mel_channels, cfg.bridge_channels, dim)
        self.rotary_embed = RotaryEmbedding(cfg.dim_head)
        self.transformer_blocks = nn.ModuleList(
            [DiTBlock(dim, cfg.heads, cfg.dim_head, cfg.ff_mult) for _ in range(cfg.depth)]
        )
        self.norm_out = AdaLayerNormZero(dim, 2)
        self.proj_out = nn.Linear(dim, cfg.mel_channels)
        self.grad_checkpointing = False

    def condition(self, text: torch.Tensor) -> torch.Tensor:
        """Features [B, C, T] -> text_embed [B, T, C]; constant over the sampling steps, so computed once."""
        return self.text_embed(text.transpose(1, 2))

    def step_embedding(self, d: torch.Tensor) -> torch.Tensor:
        return self.d_embed(d)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        x_lens: torch.Tensor,
        time: torch.Tensor,
        d: torch.Tensor,
        text: torch.Tensor | None = None,
        *,
        text_embed: torch.Tensor | None = None,
        d_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x, cond [B, mel, T], x_lens [B], time/d [B], text [B, C, T] (or its cached `text_embed`) -> v [B, T, mel]."""
        x, cond = x.transpose(1, 2), cond.transpose(1, 2)
        seq_len = x.size(1)
        mask = sequence_mask(x_lens, seq_len).to(x.device)  # [B, T] bool
        t = self.time_embed(time) + (d_emb if d_emb is not None else self.d_embed(d))
        if text_embed is None:
            assert text is not None
            text_embed = self.condition(text)
        h = self.input_embed(x, cond, text_embed)
        rope = self.rotary_embed(seq_len)
        for block in self.transformer_blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, t, mask, rope, use_reentrant=False)
            else:
                h = block(h, t, mask, rope)
        scale, shift = self.norm_out(t)
        h = F.layer_norm(h, h.shape[-1:], eps=1e-6) * (1 + scale)[:, None, :] + shift[:, None, :]
        return self.proj_out(h)
