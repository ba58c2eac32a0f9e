"""1-D convolutions that also run in the 2-D "channels last" layout, where oneDNN is fastest on CPU.

`Conv1d` / `ConvTranspose1d` are torch's layers (same parameters, same state-dict keys and shapes) that, given
x [B, C, 1, T] (`to_rows`), convolve it as a height-1 image with the weight viewed [O, I, 1, K]. Kept in
`torch.channels_last` memory format, each call maps to one oneDNN kernel with no layout reorder of the
activations; torch's 1-D path reorders around every call, which took about half of a bf16 HiFi-GAN decode
(`benchmarks/vs_upstream.py` measures the decoder against upstream's). 3-D inputs take torch's 1-D path unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Conv1d", "ConvTranspose1d", "from_rows", "to_rows"]


def to_rows(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T] -> [B, C, 1, T] in channels-last memory format."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def from_rows(x: torch.Tensor) -> torch.Tensor:
    """[B, C, 1, T] -> a contiguous [B, C, T]."""
    return x.squeeze(2).contiguous()


class Conv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("the [B, C, 1, T] layout supports integer zero padding only")
        (stride,), (pad,), (dil,) = self.stride, self.padding, self.dilation
        return F.conv2d(x, self.weight.unsqueeze(2), self.bias, (1, stride), (0, pad), (1, dil), self.groups)


class ConvTranspose1d(nn.ConvTranspose1d):
    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x, output_size)
        if output_size is not None:
            raise ValueError("output_size is not supported in the [B, C, 1, T] layout")
        stride, pad, out_pad, dil = self.stride[0], int(self.padding[0]), self.output_padding[0], self.dilation[0]
        weight = self.weight.unsqueeze(2)  # [I, O / groups, 1, K]
        return F.conv_transpose2d(x, weight, self.bias, (1, stride), (0, pad), (0, out_pad), self.groups, (1, dil))
