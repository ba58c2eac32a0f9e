"""Vocoders of the flow-matching families: mel [B, 100, T] -> waveform.

- v3: BigVGAN-v2 24 kHz 100-band x256 (`BigVGAN`, NVIDIA's `bigvgan_generator.pt` layout, weight norm g/v).
- v4: a HiFi-GAN generator (s2's `Generator` with a biased output conv), x480 to 48 kHz, upstream's
  `vocoder.pth` with weight norm already folded.
"""

from __future__ import annotations

import torch
from torch import nn

from gsvkit.errors import CheckpointError
from gsvkit.models.modules import fold_weight_norm, recompute_weight_norm
from gsvkit.models.s2.sovits import Generator, check_layout, fp32_copy
from gsvkit.models.vocoders.bigvgan import BigVGAN, BigVGANConfig

__all__ = ["VOCODER_RATE", "BigVGAN", "BigVGANConfig", "build_vocoder", "load_vocoder", "v4_vocoder"]

VOCODER_RATE = {"v3": 24000, "v4": 48000}  # output sampling rate
VOCODER_HOP = {"v3": 256, "v4": 480}


def v4_vocoder(upsample_initial_channel: int = 512) -> Generator:
    """The v4 vocoder (14.4 M parameters at the official width 512), weight norm folded as in `vocoder.pth`."""
    gen = Generator(
        100, "1", [3, 7, 11], [[1, 3, 5]] * 3, [10, 6, 2, 2, 2], upsample_initial_channel, [20, 12, 4, 4, 4],
        gin_channels=0, post_bias=True,
    )  # fmt: skip
    return fold_weight_norm(gen)


def build_vocoder(version: str) -> nn.Module:
    if version == "v3":
        return BigVGAN()
    if version == "v4":
        return v4_vocoder()
    raise ValueError(f"no vocoder for s2 version {version!r} (v3 and v4 have one)")


def load_vocoder(state_dict: dict[str, torch.Tensor], version: str) -> nn.Module:
    """An eval-mode vocoder from official weights (BigVGAN `["generator"]` for v3, `vocoder.pth` for v4)."""
    if version not in VOCODER_RATE:
        raise CheckpointError(f"no vocoder for s2 version {version!r} (v3 and v4 have one)")
    with torch.device("meta"):
        model = build_vocoder(version)
    weights = fp32_copy(state_dict)
    name = "BigVGAN-v2 24 kHz" if version == "v3" else "v4 vocoder"
    check_layout(model, weights, f"{version} vocoder", name, f"the {name} weight file")
    model.load_state_dict(weights, strict=True, assign=True)
    recompute_weight_norm(model)
    return model.eval()
