"""Speaker-verification embedding of the v2Pro/v2ProPlus families: ERes2NetV2 (3D-Speaker) through `forward3`.

Upstream GPT-SoVITS does not use the network's 192-d x-vector. It takes the fused layer-3/4 feature map, flattens
channel x frequency and averages over time, which gives m_channels * 8 * expansion * (feat_dim / 8) values (20480 at
the official size: 64 * 8 * 4 * 10):

    wav16k [B, T] float in [-1, 1] --Kaldi fbank (80 bins, dither 0, no mean normalisation)--> [B, F, 80]
        --conv1/bn1/relu, layer1..4 (ERes2NetV2 blocks; AFF fusion in 3-4)--> out3, out4
        --fuse34(out4, layer3_ds(out3)) [B, C, 10, F/8] --flatten(1, 2).mean(-1)--> [B, 20480]

Module and parameter names are upstream's, so the official `sv/pretrained_eres2netv2w24s4ep4.ckpt` (a plain state
dict) loads by name. Its x-vector head (`seg_1`, 7.9 M parameters) is accepted and dropped: it is never used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from gsvkit.errors import AudioError, CheckpointError

__all__ = ["SAMPLE_RATE", "SpeakerEncoder", "SpeakerEncoderConfig", "fbank"]

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms at 16 kHz: the shortest input that gives one fbank frame (snip_edges)
_UNUSED_PREFIXES = ("seg_1.", "seg_bn_1.", "seg_2.", "pool.")  # the x-vector head, unused by forward3


class SpeakerEncoderConfig(BaseModel):
    """ERes2NetV2 sizes. Defaults are upstream's `ERes2NetV2(baseWidth=24, scale=4, expansion=4)`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    m_channels: int = Field(64, gt=0)
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    base_width: int = Field(24, gt=0)
    scale: int = Field(4, gt=0)
    expansion: int = Field(4, gt=0)
    feat_dim: int = Field(80, gt=0, description="fbank mel bins; a multiple of 8")

    @property
    def dim(self) -> int:
        """Width of the embedding (`S2ModelConfig.sv_dim` must equal it)."""
        return self.m_channels * 8 * self.expansion * (self.feat_dim // 8)


def fbank(wav: np.ndarray, num_mel_bins: int = 80) -> np.ndarray:
    """Kaldi fbank of one 16 kHz float waveform [T] -> [frames, num_mel_bins] float32, as upstream calls it.

    25/10 ms povey frames, pre-emphasis 0.97, DC removal, power spectrum, 20 Hz..Nyquist, log with a float32-eps
    floor, dither 0, no energy and no mean normalisation. The waveform is used as given (not scaled to int16).
    """
    import kaldi_native_fbank as knf

    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size < FRAME_LENGTH:
        raise AudioError(
            f"audio too short for the speaker embedding: {wav.size} samples at 16 kHz, need at least {FRAME_LENGTH} "
            "(25 ms); use a longer reference"
        )
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = num_mel_bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    comp = knf.OnlineFbank(opts)
    comp.accept_waveform(SAMPLE_RATE, wav.tolist())
    comp.input_finished()
    return np.stack([comp.get_frame(i) for i in range(comp.num_frames_ready)]).astype(np.float32)


class _Relu(nn.Hardtanh):
    """ERes2NetV2's "ReLU" is clipped at 20."""

    def __init__(self) -> None:
        super().__init__(0.0, 20.0)


class AFF(nn.Module):
    """Attentional feature fusion: a learned per-position mix of two feature maps of the same shape."""

    def __init__(self, channels: int, r: int = 4) -> None:
        super().__init__()
        inter = channels // r
        self.local_att = nn.Sequential(
            nn.Conv2d(channels * 2, inter, 1),
            nn.BatchNorm2d(inter),
            nn.SiLU(),
            nn.Conv2d(inter, channels, 1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, ds_y: torch.Tensor) -> torch.Tensor:
        att = 1.0 + torch.tanh(self.local_att(torch.cat((x, ds_y), dim=1)))  # in (0, 2)
        return x * att + ds_y * (2.0 - att)


class Block(nn.Module):
    """ERes2NetV2 bottleneck: 1x1 -> `scale` chained 3x3 branches (summed, or AFF-fused) -> 1x1, plus shortcut."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, base_width: int, scale: int, expansion: int, fuse: bool
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.width, self.scale = width, scale
        self.conv1 = nn.Conv2d(in_planes, width * scale, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(scale)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(scale)])
        self.fuse_models = nn.ModuleList([AFF(width, r=4) for _ in range(scale - 1)]) if fuse else None
        self.relu = _Relu()
        self.conv3 = nn.Conv2d(width * scale, planes * expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * expansion)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, F, T] -> [B, planes * expansion, F/s, T/s]
        parts = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, 1)
        outs = []
        sp = parts[0]
        for i in range(self.scale):
            if i > 0:
                sp = self.fuse_models[i - 1](sp, parts[i]) if self.fuse_models is not None else sp + parts[i]
            sp = self.relu(self.bns[i](self.convs[i](sp)))
            outs.append(sp)
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        return self.relu(out + self.shortcut(x))


class SpeakerEncoder(nn.Module):
    """ERes2NetV2 trunk + upstream's `forward3` pooling; `embed(wav16k)` is what upstream's `SV` computes."""

    def __init__(self, cfg: SpeakerEncoderConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else SpeakerEncoderConfig()
        self.cfg = cfg
        m, e = cfg.m_channels, cfg.expansion
        self.conv1 = nn.Conv2d(1, m, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        in_planes = m
        layers = []
        for i, (n, stride) in enumerate(zip(cfg.num_blocks, (1, 2, 2, 2), strict=True)):
            planes = m * 2**i
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(Block(in_planes, planes, s, cfg.base_width, cfg.scale, e, fuse=i >= 2))
                in_planes = planes * e
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.layer3_ds = nn.Conv2d(m * 4 * e, m * 8 * e, 3, padding=1, stride=2, bias=False)
        self.fuse34 = AFF(m * 8 * e, r=4)

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """fbank [B, frames, feat_dim] -> embedding [B, dim]."""
        x = feats.transpose(1, 2).unsqueeze(1)  # [B, 1, feat_dim, frames]
        out = torch.relu(self.bn1(self.conv1(x)))
        out3 = self.layer3(self.layer2(self.layer1(out)))
        out4 = self.layer4(out3)
        fused = self.fuse34(out4, self.layer3_ds(out3))  # [B, 8 m e, feat_dim / 8, frames / 8]
        return fused.flatten(1, 2).mean(-1)

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        """[B, T] float waveforms at 16 kHz -> fbank [B, frames, feat_dim] on the model's device and dtype."""
        if wav16k.dim() != 2:
            raise ValueError(f"wav16k: expected [B, T] float samples at 16 kHz, got {tuple(wav16k.shape)}")
        rows = wav16k.detach().to("cpu", torch.float32).numpy()
        feats = np.stack([fbank(w, self.cfg.feat_dim) for w in rows])
        p = self.conv1.weight
        return torch.from_numpy(feats).to(device=p.device, dtype=p.dtype)

    @torch.inference_mode()
    def embed(self, wav16k: torch.Tensor) -> torch.Tensor:
        """[B, T] float waveforms in [-1, 1] at 16 kHz -> [B, dim] float32 speaker embeddings."""
        return self(self.features(wav16k)).float().clone()

    # ------------------------------------------------------------------------------------------- loading
    @staticmethod
    def config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> SpeakerEncoderConfig:
        """The sizes that produced `sd` (so tiny test models and the official one load the same way)."""
        try:
            m = int(sd["conv1.weight"].shape[0])
            blocks = tuple(
                len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.") and k.split(".")[1].isdigit()})
                for i in range(1, 5)
            )
            scale = len({k.split(".")[3] for k in sd if k.startswith("layer1.0.convs.")})
            width = int(sd["layer1.0.convs.0.weight"].shape[0])
            expansion = int(sd["layer1.0.conv3.weight"].shape[0]) // m
            feat_dim = 80
            if "seg_1.weight" in sd:  # TSTP pooling: mean and std of (feat_dim / 8) * 8 m e values
                feat_dim = int(sd["seg_1.weight"].shape[1]) // (2 * 8 * m * expansion) * 8
            return SpeakerEncoderConfig(
                m_channels=m,
                num_blocks=blocks,
                base_width=width * 64 // m,
                scale=scale,
                expansion=expansion,
                feat_dim=feat_dim,
            )
        except (KeyError, IndexError, ValueError, ZeroDivisionError, TypeError) as err:
            raise CheckpointError(
                f"not an ERes2NetV2 speaker-verification state dict ({type(err).__name__}: {err}); "
                "give upstream's sv/pretrained_eres2netv2w24s4ep4.ckpt"
            ) from None

    @classmethod
    def from_upstream_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> SpeakerEncoder:
        """An eval-mode fp32 encoder from upstream's ERes2NetV2 state dict (fp16 or fp32); strict by name."""
        cfg = cls.config_from_state_dict(sd)
        with torch.device("meta"):
            model = cls(cfg)
        weights = {
            k: (v.to(torch.float32, copy=True) if torch.is_floating_point(v) else v.clone())
            for k, v in sd.items()
            if not k.startswith(_UNUSED_PREFIXES)
        }
        expected = model.state_dict()
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        wrong = sorted(k for k, v in expected.items() if k in weights and tuple(weights[k].shape) != tuple(v.shape))
        if missing or unexpected or wrong:
            detail = "; ".join(
                f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                if keys
            )
            raise CheckpointError(f"speaker-verification weights do not match ERes2NetV2 ({detail})")
        model.load_state_dict(weights, strict=True, assign=True)
        return model.eval()
