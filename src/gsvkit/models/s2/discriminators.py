"""HiFi-GAN discriminators for s2 training: one scale discriminator + period discriminators [2, 3, 5, 7, 11].

Names match upstream `MultiPeriodDiscriminator` (`discriminators.{0..5}.convs.N.weight_g/_v`, `conv_post`), so an
official pretrained D file loads with strict matching.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gsvkit.config import S2ModelConfig
from gsvkit.models.modules import LRELU_SLOPE, get_padding, weight_norm

__all__ = ["DiscriminatorP", "DiscriminatorS", "MultiPeriodDiscriminator"]

PERIODS = (2, 3, 5, 7, 11)
PRO_PERIODS = (2, 3, 5, 7, 11, 17, 23)  # v2Pro/v2ProPlus add two longer periods


def _norm(module: nn.Module, use_spectral_norm: bool) -> nn.Module:
    return nn.utils.spectral_norm(module) if use_spectral_norm else weight_norm(module)


def _conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """convs (each followed by leaky ReLU) then conv_post -> (flattened scores [B, *], every feature map)."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap


def _narrow(channels: int, divisor: int) -> int:
    # Official widths divided for small test/smoke configs; divisor 1 is upstream's discriminator exactly.
    return max(1, channels // divisor)


class DiscriminatorP(nn.Module):
    """Folds the waveform into [B, 1, T/period, period] and runs 2-D convs along time."""

    def __init__(
        self,
        period: int,
        kernel_size: int = 5,
        stride: int = 3,
        use_spectral_norm: bool = False,
        channel_divisor: int = 1,
    ) -> None:
        super().__init__()
        self.period = period
        pad = (get_padding(kernel_size, 1), 0)
        chans = [1] + [_narrow(c, channel_divisor) for c in (32, 128, 512, 1024)]
        top = chans[-1]
        convs = [
            nn.Conv2d(a, b, (kernel_size, 1), (stride, 1), padding=pad)
            for a, b in zip(chans[:-1], chans[1:], strict=True)
        ]
        convs.append(nn.Conv2d(top, top, (kernel_size, 1), 1, padding=pad))
        self.convs = nn.ModuleList([_norm(c, use_spectral_norm) for c in convs])
        self.conv_post = _norm(nn.Conv2d(top, 1, (3, 1), 1, padding=(1, 0)), use_spectral_norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), "reflect")
            t += n_pad
        x = x.view(b, c, t // self.period, self.period)
        return _conv_stack(self.convs, self.conv_post, x)


class DiscriminatorS(nn.Module):
    """Grouped 1-D convs on the raw waveform."""

    def __init__(self, use_spectral_norm: bool = False, channel_divisor: int = 1) -> None:
        super().__init__()
        d = channel_divisor
        c16, c64, c256, c1024 = (_narrow(c, d) for c in (16, 64, 256, 1024))
        convs = [
            nn.Conv1d(1, c16, 15, 1, padding=7),
            nn.Conv1d(c16, c64, 41, 4, groups=_narrow(4, d), padding=20),
            nn.Conv1d(c64, c256, 41, 4, groups=_narrow(16, d), padding=20),
            nn.Conv1d(c256, c1024, 41, 4, groups=_narrow(64, d), padding=20),
            nn.Conv1d(c1024, c1024, 41, 4, groups=_narrow(256, d), padding=20),
            nn.Conv1d(c1024, c1024, 5, 1, padding=2),
        ]
        self.convs = nn.ModuleList([_norm(c, use_spectral_norm) for c in convs])
        self.conv_post = _norm(nn.Conv1d(c1024, 1, 3, 1, padding=1), use_spectral_norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(self.convs, self.conv_post, x)


class MultiPeriodDiscriminator(nn.Module):
    """forward(y, y_hat) [B, 1, T] -> (real scores, fake scores, real feature maps, fake feature maps), per disc."""

    def __init__(self, cfg: S2ModelConfig | None = None, use_spectral_norm: bool | None = None) -> None:
        super().__init__()
        if use_spectral_norm is None:
            use_spectral_norm = cfg.use_spectral_norm if cfg is not None else False
        div = cfg.discriminator_channel_divisor if cfg is not None else 1
        periods = PRO_PERIODS if cfg is not None and cfg.is_pro else PERIODS
        discs: list[nn.Module] = [DiscriminatorS(use_spectral_norm, channel_divisor=div)]
        discs += [DiscriminatorP(p, use_spectral_norm=use_spectral_norm, channel_divisor=div) for p in periods]
        self.discriminators = nn.ModuleList(discs)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            y_d_r, fmap_r = d(y)
            y_d_g, fmap_g = d(y_hat)
            y_d_rs.append(y_d_r)
            y_d_gs.append(y_d_g)
            fmap_rs.append(fmap_r)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs
