"""Weight-only 4-bit linear layers for CPU inference: `Int4Linear`.

Each output row's weights are split into groups of `group` inputs; a group stores 4-bit codes q in 0..15 with one
bf16 scale and minimum, so a weight is `q * scale + minimum` (asymmetric, round to nearest). The product runs in
torch's own CPU kernel for this format (`torch._weight_int4pack_mm_for_cpu`, bf16 activations, fp32 accumulation),
which reads half the bytes of int8 weights: batch-1 decoding reads every weight once per token, so that is where
its time goes. That kernel is slow for many rows, though (the official s1's pass over 135 positions of text and
prompt, `benchmarks/models.py` at 2 threads: 0.16-0.17 s in 4 bits, 0.06 s with int8 copies): a layer built
with `wide=True` also keeps an int8 copy of the same weights (`gsvkit.models.modules.int8`, twice the 4-bit bytes)
and computes calls of `WIDE_ROWS` rows or more with it, so such passes get int8's speed and its smaller error.

Why not a library: torchao is the maintained home of int4 weight-only quantisation, but its current wheels route
int4 to CUDA kernels only (its CPU layout was removed), so the packing for torch's CPU kernel is done here (one
function, `pack_int4`). The kernel needs the output size to be a multiple of 16 and the input size a multiple of
`group`; `Int4Linear.supports` says whether a layer qualifies.
"""

from __future__ import annotations

import torch
from torch import nn

from gsvkit.models.modules.int8 import int8_linear

GROUP_SIZES = (32, 64, 128, 256)  # inputs per scale; smaller is closer to the float weights and a little slower
# Rows per call from which a `wide` layer uses its int8 copy: below, the 4-bit kernel is as fast or faster (24 layers
# of the official s1 at 2 threads: 8 rows 15 ms 4-bit against 12 ms int8, 16 rows 28 against 20, 160 rows 185 against
# 53); a decoding step (one row per sequence) always takes the 4-bit path.
WIDE_ROWS = 16


def pack_int4(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float weights → (packed codes [N, K/2] uint8, scales and offsets [K/group, N, 2] bf16) for
    `torch._weight_int4pack_mm_for_cpu`. That kernel computes a weight as `(q - 8) * scale + offset`, so
    offset = minimum + 8 * scale gives `q * scale + minimum`."""
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // group, group)  # [N, G, group]
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-8)  # [N, G, 1]
    q = ((w - lo) / scale).round_().clamp_(0, 15).to(torch.int32).reshape(n, k)
    packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
    offsets = torch.cat([scale, lo + 8 * scale], dim=-1)  # [N, G, 2]
    return packed, offsets.transpose(0, 1).contiguous().to(torch.bfloat16)


def unpack_int4(module: Int4Linear) -> torch.Tensor:
    """The float weights [N, K] that `module` computes with (what 4-bit rounding made of the original)."""
    eye = torch.eye(module.in_features, dtype=torch.bfloat16)
    return torch._weight_int4pack_mm_for_cpu(eye, module.packed, module.group, module.scales).float().t()


class Int4Linear(nn.Module):
    """`nn.Linear` with 4-bit group-wise weights (inference only, CPU). Input any [..., K] float; output fp32."""

    packed: torch.Tensor  # [N, K/2] uint8 codes in the kernel's layout
    scales: torch.Tensor  # [K/group, N, 2] bf16 scale and offset of each group
    bias: torch.Tensor | None  # [N] fp32

    def __init__(
        self,
        packed: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None,
        group: int,
        k: int,
        wide: nn.Module | None = None,
    ):
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.group, self.in_features, self.out_features = group, k, packed.shape[0]
        self.wide = wide  # int8 copy of the same layer for calls of WIDE_ROWS rows or more (None: 4-bit always)

    @staticmethod
    def supports(linear: nn.Linear, group: int) -> bool:
        return linear.out_features % 16 == 0 and linear.in_features % group == 0

    @classmethod
    def from_linear(cls, linear: nn.Linear, group: int = 32, wide: bool = False) -> Int4Linear:
        """`linear` in 4 bits; `wide=True` also keeps the int8 copy many-row calls use (see the module's doc)."""
        if group not in GROUP_SIZES:
            raise ValueError(f"int4 group size {group} is not one of {GROUP_SIZES}")
        if not cls.supports(linear, group):
            raise ValueError(
                f"int4 needs out_features % 16 == 0 and in_features % {group} == 0, got "
                f"{linear.out_features} x {linear.in_features}"
            )
        packed, scales = pack_int4(linear.weight, group)
        int8 = int8_linear(linear.float()) if wide else None
        return cls(packed, scales, linear.bias, group, linear.in_features, int8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., K] -> [..., N]
        if self.wide is not None and x.numel() >= WIDE_ROWS * self.in_features:
            return self.wide(x.float())
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch._weight_int4pack_mm_for_cpu(rows, self.packed, self.group, self.scales)  # [M, N] bf16
        y = y.float() if self.bias is None else torch.add(y, self.bias)  # bf16 + fp32 bias -> fp32 in one op
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        wide = f", int8 from {WIDE_ROWS} rows" if self.wide is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}{wide}"
