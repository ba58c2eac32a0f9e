"""s1 attention: multi-head self-attention with a per-layer key/value cache, and CPU attention with dropout.

Inference grows the cache by doubling, so one new token per step appends to preallocated tensors. Training with
attention dropout on the CPU: torch's kernel materialises the full weights [B, H, T, S] for the backward pass, so
above `FULL_ATTENTION_MAX` weights per layer the query rows are processed in chunks of `ATTENTION_CHUNK` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys and values of every layer, preallocated as [B, H, capacity, head_dim] and grown by doubling.

    `update` writes a layer's new keys/values after the `length` cached ones and returns views of everything so far;
    `advance` moves `length` on once every layer has been updated for the current step; `keep` drops batch rows.
    """

    def __init__(self, n_layers: int, batch: int, heads: int, head_dim: int, capacity: int, like: torch.Tensor):
        shape = (batch, heads, max(1, capacity), head_dim)
        self.k = [like.new_empty(shape) for _ in range(n_layers)]
        self.v = [like.new_empty(shape) for _ in range(n_layers)]
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def _grow(self, needed: int) -> None:
        cap = max(needed, 2 * self.capacity)
        for buf in (self.k, self.v):
            for i, old in enumerate(buf):
                new = old.new_empty((old.shape[0], old.shape[1], cap, old.shape[3]))
                new[:, :, : self.length] = old[:, :, : self.length]
                buf[i] = new

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.capacity:
            self._grow(end)
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def keep(self, rows: list[int]) -> None:
        """Keep only batch `rows` (ascending): the cached part of each moved row is copied down in place, and the
        buffers become views of their first len(rows) rows (no new allocation)."""
        for buf in (self.k, self.v):
            for i, old in enumerate(buf):
                for dst, src in enumerate(rows):
                    if dst != src:
                        old[dst, :, : self.length] = old[src, :, : self.length]
                buf[i] = old[: len(rows)]  # [B', H, cap, hd]


class SelfAttention(nn.Module):
    """Multi-head self-attention with `nn.MultiheadAttention`'s parameter names (packed `in_proj_weight`)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)
        self.qkv_int8: nn.Module | None = None  # set by `quantize_int8` (inference-only copies)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, D]
        attn_mask: torch.Tensor | None = None,  # bool, True = may attend; broadcastable to [B, H, T, S]
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        b, t, d = x.shape
        if self.qkv_int8 is not None:
            qkv = self.qkv_int8(x)
        else:
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [B, T, 3D]
        q, k, v = qkv.view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # each [B, H, T, hd]
        if cache is not None:
            k, v = cache.update(layer, k, v)  # [B, H, S, hd]
        p = self.dropout if self.training else 0.0
        if p > 0 and q.device.type == "cpu" and torch.is_grad_enabled() and attention_is_large(q, k):
            out = chunked_dropout_attention(q, k, v, attn_mask, p)
        else:
            # On CUDA the memory-efficient kernel applies dropout and masks without a [T, S] matrix per head.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # [B, H, T, hd]
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


ATTENTION_CHUNK = 128  # query rows per chunk of CPU attention with dropout
# Above this many attention weights per layer ([B, H, T, S] elements) CPU attention with dropout runs in chunks;
# below it torch's kernel (which keeps the weights and mask for the backward pass) is faster and its memory small.
FULL_ATTENTION_MAX = 2**21


def attention_is_large(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether q [B, H, T, hd] against k [B, H, S, hd] would keep more than FULL_ATTENTION_MAX weights per layer."""
    b, h, t, _ = q.shape
    return b * h * t * k.shape[2] > FULL_ATTENTION_MAX


def chunked_dropout_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, p: float
) -> torch.Tensor:
    """Attention with dropout on the weights, `ATTENTION_CHUNK` query rows at a time, each chunk recomputed in
    the backward pass instead of stored: q [B, H, T, hd], k/v [B, H, S, hd] → [B, H, T, hd].

    CPU has no fused attention kernel with dropout; the plain one keeps the full [B, H, T, S] weights and dropout
    mask of every layer for the backward pass (at the official size and 800 tokens that is most of a step's
    memory). Here only one chunk's weights exist at a time; checkpointing restores the RNG state, so the backward
    pass sees the same dropout mask.
    """
    from torch.utils.checkpoint import checkpoint

    t = q.shape[2]
    rows_in_mask = attn_mask is not None and attn_mask.dim() >= 2 and attn_mask.shape[-2] == t
    outs = []
    for i in range(0, t, ATTENTION_CHUNK):
        m = attn_mask[..., i : i + ATTENTION_CHUNK, :] if rows_in_mask else attn_mask
        outs.append(checkpoint(_attend, q[:, :, i : i + ATTENTION_CHUNK], k, v, m, p, use_reentrant=False))
    return torch.cat(outs, dim=2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, p: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
