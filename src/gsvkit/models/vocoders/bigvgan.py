"""BigVGAN-v2 (NVIDIA), the v3 vocoder: 100-band 24 kHz log-mel [B, 100, T] -> waveform [B, 1, 256 T].

Written from the paper's structure, with the parameter names of NVIDIA's `bigvgan_generator.pt` so the official
`bigvgan_v2_24khz_100band_256x` weights load (weight norm in the old g/v form):

    conv_pre -> 6 x (ConvTranspose up, mean of 3 AMP blocks) -> anti-aliased SnakeBeta -> conv_post -> clamp [-1, 1]

An AMP block is 3 x (act -> dilated conv -> act -> conv, residual); every activation is *anti-aliased*: upsample
x2 with a Kaiser-windowed sinc, SnakeBeta x + sin^2(a x) / b (a, b per channel, stored as logs), low-pass and
decimate x2. The sinc filters are saved buffers (`*.upsample.filter`, `*.downsample.lowpass.filter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from gsvkit.models.modules import get_padding, weight_norm

__all__ = ["BigVGAN", "BigVGANConfig"]


@dataclass(frozen=True)
class BigVGANConfig:
    """Defaults: `bigvgan_v2_24khz_100band_256x` (112.4 M parameters)."""

    num_mels: int = 100
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    upsample_initial_channel: int = 1536
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = field(default=((1, 3, 5), (1, 3, 5), (1, 3, 5)))
    sampling_rate: int = 24000

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)


def kaiser_sinc(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Low-pass FIR [1, 1, K]: Kaiser-windowed sinc (beta from the attenuation for `half_width`), sum 1."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    if kernel_size % 2 == 0:
        time = torch.arange(-half, half) + 0.5
    else:
        time = torch.arange(kernel_size) - half
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (filt / filt.sum()).view(1, 1, kernel_size)


class UpSample1d(nn.Module):
    filter: torch.Tensor  # buffer: the Kaiser-windowed sinc

    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, ratio T]
        c = x.size(1)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(c, -1, -1), stride=self.ratio, groups=c)
        return x[..., self.crop_left : -self.crop_right]


class LowPassFilter1d(nn.Module):
    filter: torch.Tensor  # buffer: the Kaiser-windowed sinc

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int = 12) -> None:
        super().__init__()
        even = kernel_size % 2 == 0
        self.pad_left, self.pad_right = kernel_size // 2 - int(even), kernel_size // 2
        self.stride = stride
        self.register_buffer("filter", kaiser_sinc(cutoff, half_width, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=self.stride, groups=c)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int = 12) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """x + sin^2(exp(alpha) x) / (exp(beta) + 1e-9), per channel of [B, C, T]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha)[None, :, None]
        beta = torch.exp(self.beta)[None, :, None]
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class Activation1d(nn.Module):
    """Anti-aliased activation: x2 up, act, x2 down."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act
        self.upsample = UpSample1d(2, 12)
        self.downsample = DownSample1d(2, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...]) -> None:
        super().__init__()

        def conv(d: int) -> nn.Module:
            pad = get_padding(kernel_size, d)
            return weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=pad))

        self.convs1 = nn.ModuleList([conv(d) for d in dilation])
        self.convs2 = nn.ModuleList([conv(1) for _ in dilation])
        self.activations = nn.ModuleList([Activation1d(SnakeBeta(channels)) for _ in range(2 * len(dilation))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acts = list(self.activations)
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, acts[::2], acts[1::2], strict=True):
            x = x + c2(a2(c1(a1(x))))
        return x


class BigVGAN(nn.Module):
    def __init__(self, cfg: BigVGANConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or BigVGANConfig()
        self.cfg = cfg
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        ch0 = cfg.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(cfg.num_mels, ch0, 7, 1, padding=3))
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            up = nn.ConvTranspose1d(ch0 // 2**i, ch0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            self.ups.append(nn.ModuleList([weight_norm(up)]))
        self.resblocks = nn.ModuleList()
        ch = ch0
        for i in range(len(self.ups)):
            ch = ch0 // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                self.resblocks.append(AMPBlock1(ch, k, tuple(d)))
        self.activation_post = Activation1d(SnakeBeta(ch))
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, 100, T] (natural log, not normalised) -> waveform [B, 1, hop T] in [-1, 1]."""
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = cast(nn.ModuleList, up)[0](x)  # one conv per list: the weight files' `ups.<i>.0` keys
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        return torch.clamp(x, -1.0, 1.0)  # v2 24 kHz: no tanh at the end
