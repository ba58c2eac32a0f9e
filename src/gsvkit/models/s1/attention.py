"""s1 attention: multi-head self-attention with a per-layer key/value cache, and CPU attention with dropout.

Inference grows the cache by doubling, so one new token per step appends to preallocated tensors. Training with
attention dropout on the CPU: torch's kernel keeps the full weights [B, H, T, S] of every layer for the backward
pass (three copies: weights, dropped weights, fp32 dropout noise), so `dropout_attention` computes them in chunks
of query rows and recomputes them in the backward pass, dropout mask included (drawn again from a saved seed).
"""

from __future__ import annotations

import math

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

    def reserve(self, n: int) -> None:
        """Make room for `n` more positions (the buffers are replaced when they grow)."""
        if self.length + n > self.capacity:
            self._grow(self.length + n)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.reserve(k.shape[2])
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
        self.qkv_quantized: nn.Module | None = None  # set by `quantize_int8` / `quantize_int4` (inference copies)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, D]
        attn_mask: torch.Tensor | None = None,  # bool, True = may attend; broadcastable to [B, H, T, S]
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        b, t, d = x.shape
        if self.qkv_quantized is not None:
            qkv = self.qkv_quantized(x)
        else:
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [B, T, 3D]
        q, k, v = qkv.view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # each [B, H, T, hd]
        if cache is not None:
            k, v = cache.update(layer, k, v)  # [B, H, S, hd]
        p = self.dropout if self.training else 0.0
        if t == 1 and p == 0 and q.device.type == "cpu" and q.dtype != torch.float32:
            out = one_query_attention(q, k, v, attn_mask)  # bf16 decoding step (see there)
        elif p > 0 and q.device.type == "cpu":
            out = dropout_attention(q, k, v, attn_mask, p)
        else:
            # On CUDA the memory-efficient kernel applies dropout and masks without a [T, S] matrix per head.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # [B, H, T, hd]
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


def one_query_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention of one query per row, as a decoding step runs it on the CPU: q [B, H, 1, hd], k/v [B, H, S, hd],
    `attn_mask` None or bool broadcastable to [B, H, 1, S] (True = may attend) → [B, H, 1, hd].

    Two batched matrix products and a softmax in fp32. Used for bf16 inputs, where torch's fused CPU kernel is
    slower for one query row (16 heads of 32, 2 threads: 86 µs against 110 µs for 230 keys, 106 against 165 for
    350); in fp32 the fused kernel is the faster one (40 µs against 29 for 230 keys, 51 against 36 for 350) and
    `SelfAttention` calls it instead.
    """
    scores = (q @ k.transpose(-1, -2)).float().mul_(1.0 / math.sqrt(q.shape[-1]))  # [B, H, 1, S]
    if attn_mask is not None:
        scores.masked_fill_(~attn_mask, float("-inf"))
    return scores.softmax(-1).to(v.dtype) @ v


# Query rows per chunk of CPU attention with dropout are chosen so one chunk's weights [B, H, rows, S] hold at most
# this many elements (16 MiB in fp32): the chunk's temporaries are the only [*, S]-sized tensors that exist.
CHUNK_ELEMENTS = 2**22


def chunk_rows(b: int, h: int, s: int) -> int:
    """Query rows per chunk of `dropout_attention` for batch b, h heads and s keys (at least 1)."""
    return max(1, CHUNK_ELEMENTS // max(1, b * h * s))


def dropout_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, p: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + mask) with dropout p on the weights, times v: q [B, H, T, hd], k/v [B, H, S, hd]
    → [B, H, T, hd]. `attn_mask`: None or bool (True = may attend) broadcastable to [B, H, T, S].

    Each weight is dropped with probability p and the kept ones scaled by 1/(1-p), as torch's kernel does. The
    weights are computed `chunk_rows` query rows at a time and never stored: the backward pass recomputes each
    chunk from q, k, the row log-sum-exps and the dropout mask, which it draws again from a seed saved per call
    (taken from torch's global generator, so `torch.manual_seed` makes it reproducible). What is kept for the
    backward pass is q, k, v, the output and [B, H, T] log-sum-exps: O(B·H·T·hd), not O(B·H·T·S).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"attention dropout must be in [0, 1), got {p}")
    seed = int(torch.randint(0, 2**62, ()))  # global CPU generator
    return _DropoutAttention.apply(q, k, v, attn_mask, p, seed)


class _DropoutAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, p, seed):  # type: ignore[override]
        b, h, t, hd = q.shape
        scale = 1.0 / math.sqrt(hd)
        out = v.new_empty(b, h, t, v.shape[-1])  # [B, H, T, hd]
        lse = q.new_empty(b, h, t, dtype=_acc(q))  # [B, H, T] log-sum-exp of each row's scaled, masked scores
        for i, rows in _chunks(q, k):
            w, lse_c = _weights(q[:, :, rows], k, _mask_rows(mask, rows, t), scale)  # [B, H, c, S], [B, H, c]
            lse[:, :, rows] = lse_c
            w.mul_(_keep(w, p, seed + i))
            out[:, :, rows] = (w.to(v.dtype) @ v).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mask, ctx.p, ctx.seed = mask, p, seed
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        mask, p, seed = ctx.mask, ctx.p, ctx.seed
        t, scale, inv_keep = q.shape[2], 1.0 / math.sqrt(q.shape[3]), 1.0 / (1.0 - p)
        dq = torch.empty_like(q)
        acc = _acc(q)
        dk, dv = torch.zeros_like(k, dtype=acc), torch.zeros_like(v, dtype=acc)
        for i, rows in _chunks(q, k):
            q_c, do_c = q[:, :, rows], grad_out[:, :, rows]  # [B, H, c, hd]
            w = _scores(q_c, k, _mask_rows(mask, rows, t), scale).sub_(lse[:, :, rows, None]).exp_()  # P
            keep = _keep(w, p, seed + i)  # the forward pass's mask, drawn again
            dropped = (w * keep).mul_(inv_keep).transpose(-1, -2).to(v.dtype)
            dv += (dropped @ do_c).to(acc)  # dropped weights^T · dO
            dw = (do_c @ v.transpose(-1, -2)).to(acc).mul_(keep).mul_(inv_keep)  # d loss / d P  [B, H, c, S]
            delta = (do_c.to(acc) * out[:, :, rows].to(acc)).sum(-1, keepdim=True)  # Σ_j P_ij dP_ij = dO_i · O_i
            ds = dw.sub_(delta).mul_(w).mul_(scale)  # d loss / d (q k^T)  [B, H, c, S]
            dq[:, :, rows] = ds.to(k.dtype) @ k
            dk += (ds.transpose(-1, -2).to(q.dtype) @ q_c).to(acc)
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None


def _chunks(q: torch.Tensor, k: torch.Tensor):
    b, h, t, _ = q.shape
    step = chunk_rows(b, h, k.shape[2])
    for i, start in enumerate(range(0, t, step)):
        yield i, slice(start, min(t, start + step))


def _mask_rows(mask: torch.Tensor | None, rows: slice, t: int) -> torch.Tensor | None:
    """The rows of a [.., T, S] (or [.., 1, S] / [S]) mask that belong to query rows `rows`."""
    if mask is not None and mask.dim() >= 2 and mask.shape[-2] == t:
        return mask[..., rows, :]
    return mask


def _acc(x: torch.Tensor) -> torch.dtype:
    """The dtype the weights and their statistics are computed in: fp32 for fp16/bf16 inputs, else x's dtype."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Scaled scores q k^T [B, H, c, S] in fp32 (fp16/bf16 inputs too), -inf where `mask` (bool) forbids."""
    s = (q @ k.transpose(-1, -2)).to(_acc(q)).mul_(scale)
    return s if mask is None else s.masked_fill_(~mask, float("-inf"))


def _weights(q, k, mask, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax weights [B, H, c, S] and row log-sum-exps [B, H, c]; a row with no allowed key gets weights 0."""
    s = _scores(q, k, mask, scale)
    lse = torch.logsumexp(s, dim=-1)
    lse = lse.masked_fill_(torch.isinf(lse), 0.0)  # all -inf: exp(-inf - 0) = 0, no NaN
    return s.sub_(lse[..., None]).exp_(), lse


def _keep(w: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Bool mask shaped like `w`, True with probability 1-p, a pure function of `seed` (same draw in both passes)."""
    g = torch.Generator(device=w.device).manual_seed(seed)
    return torch.rand(w.shape, generator=g, device=w.device) >= p
