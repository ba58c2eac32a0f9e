"""Small shared helpers of the VITS family: masks, padding, random segment slicing, the gated activation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "LRELU_SLOPE",
    "LayerNorm",
    "fused_add_tanh_sigmoid_multiply",
    "get_padding",
    "rand_slice_segments",
    "sequence_mask",
    "slice_segments",
]

LRELU_SLOPE = 0.1  # HiFi-GAN's leaky-ReLU slope (the decoder's very last activation uses torch's default 0.01)


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of an odd, dilated kernel."""
    return (kernel_size * dilation - dilation) // 2


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """[B] lengths -> [B, max_length] bool, True inside each sequence."""
    if max_length is None:
        max_length = int(lengths.max())
    steps = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def fused_add_tanh_sigmoid_multiply(a: torch.Tensor, b: torch.Tensor, n_channels: int) -> torch.Tensor:
    """WaveNet gate: tanh(first half of a+b) * sigmoid(second half)."""
    x = a + b
    return torch.tanh(x[:, :n_channels]) * torch.sigmoid(x[:, n_channels:])


def slice_segments(x: torch.Tensor, starts: torch.Tensor, segment_size: int) -> torch.Tensor:
    """x [B, C, T], starts [B] -> [B, C, segment_size]; positions past the end read as zeros."""
    b, c, t = x.shape
    idx = starts.to(x.device).long().unsqueeze(1) + torch.arange(segment_size, device=x.device)  # [B, S]
    valid = (idx >= 0) & (idx < t)
    gathered = torch.gather(x, 2, idx.clamp(0, max(t - 1, 0)).unsqueeze(1).expand(b, c, segment_size))
    return gathered * valid.unsqueeze(1).to(x.dtype)


def rand_slice_segments(
    x: torch.Tensor,
    lengths: torch.Tensor | None = None,
    segment_size: int = 4,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random window of `segment_size` frames inside each item's valid length: (slices, start indices [B])."""
    b, _, t = x.shape
    if lengths is None:
        lengths = torch.full((b,), t, device=x.device)
    # Items shorter than a segment start at 0 (and are zero-padded) instead of getting a negative start.
    max_start = (lengths.to(x.device) - segment_size + 1).clamp(min=1)
    u = torch.rand(b, generator=generator, device=generator.device if generator is not None else "cpu")
    starts = (u.to(x.device) * max_start).long()
    return slice_segments(x, starts, segment_size), starts


class LayerNorm(nn.Module):
    """LayerNorm over the channel dim of [B, C, T] tensors (parameters named gamma/beta as upstream)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, -1)
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)
