"""SoVITS v3/v4 (`SynthesizerTrnV3`): semantic codes + phones + a reference spectrogram -> mel, by flow matching.

Computes what upstream `module/models.py::SynthesizerTrnV3` computes, with its module and parameter names (v3 and
v4 share all keys; only the feature upsampling differs):

    ref spec [B, 1025, F] --ref_enc (first 704 bins)--> ge [B, 512, 1]
    codes [1, B, N] --codebook, x2 nearest--> [B, 768, 2N] --enc_p (v2's TextEncoder, MRTE(ge))--> x [B, 192, 2N]
        --bridge (1x1 conv 512, LeakyReLU)--> --nearest x1.875 (v3) / x2 (v4)--> --wns1 (WaveNet, ge)--> fea [B, 512, T]
    fea + reference mel prompt --cfm (DiT velocity, Euler)--> normalised mel [B, 100, T] --vocoder--> waveform

The text encoder, quantizer and reference encoder are the ones of `SynthesizerTrn` (gsvkit.models.s2.sovits).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gsvkit.config import FLOW_VERSIONS, FlowDecoderConfig, S2ModelConfig, official_config
from gsvkit.errors import CheckpointError
from gsvkit.models.cfm import CFM, CHUNKS, DiT, decode_chunked
from gsvkit.models.cfm.flow_matching import Noise
from gsvkit.models.modules import WN, MelStyleEncoder, sequence_mask
from gsvkit.models.s2.quantizer import ResidualVectorQuantizer
from gsvkit.models.s2.sovits import TextEncoder, check_layout, fp32_copy

__all__ = ["SynthesizerTrnV3", "flow_config_from_state_dict"]

# Mel frames per 25 Hz semantic token: 2 content frames x the feature upsampling (upstream's decode_encp sizes).
FRAMES_PER_TOKEN = {"v3": 3.875, "v4": 4.0}
FEATURE_UPSAMPLE = {"v3": 1.875, "v4": 2.0}


def flow_config_from_state_dict(sd) -> FlowDecoderConfig:
    """The mel decoder's sizes read off a full v3/v4 state dict (cfm.*, bridge, wns1 keys); heads of 64 channels."""
    est = "cfm.estimator."
    try:
        dim = int(sd[est + "proj_out.weight"].shape[1])
        inner = int(sd[est + "transformer_blocks.0.attn.to_q.weight"].shape[0])
        hidden = int(sd[est + "transformer_blocks.0.ff.ff.0.0.weight"].shape[0])
        mel = int(sd[est + "proj_out.weight"].shape[0])
        width = int(sd["bridge.0.weight"].shape[0])
    except KeyError as err:
        raise CheckpointError(f"v3/v4 weights lack {err.args[0]}: not a full SynthesizerTrnV3 state dict") from None

    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})

    dim_head = FlowDecoderConfig().dim_head
    return FlowDecoderConfig(
        dim=dim,
        depth=count(est + "transformer_blocks."),
        heads=max(1, inner // dim_head),
        dim_head=dim_head if inner >= dim_head else inner,
        ff_mult=max(1, hidden // dim),
        conv_layers=count(est + "text_embed.text_blocks."),
        mel_channels=mel,
        bridge_channels=width,
        wns1_layers=count("wns1.enc.in_layers."),
    )


class ConditionEncoder(nn.Module):
    """pre (1x1) -> WaveNet (ge) -> proj (1x1), masked: upstream's `Encoder` used as wns1."""

    def __init__(self, channels: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.pre = nn.Conv1d(channels, channels, 1)
        self.enc = WN(channels, 5, 1, n_layers, gin_channels=gin_channels)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        mask = sequence_mask(lengths, x.size(2)).unsqueeze(1).to(x.dtype)  # [B, 1, T]
        x = self.enc(self.pre(x) * mask, mask, g=None if g is None else g.detach())
        return self.proj(x) * mask


class SynthesizerTrnV3(nn.Module):
    """GPT-SoVITS s2 v3/v4, built from an `S2ModelConfig` (version v3|v4, `flow` = the mel decoder sizes)."""

    def __init__(self, cfg: S2ModelConfig) -> None:
        super().__init__()
        if not cfg.is_flow:
            raise ValueError(f"SynthesizerTrnV3 is for versions {FLOW_VERSIONS}, got {cfg.version!r}")
        self.cfg = cfg
        self.version = cfg.version
        self.ref_bins = cfg.ref_bins
        flow = cfg.flow_decoder
        # Construction order = upstream's, so state_dict() lists keys in the official order.
        self.enc_p = TextEncoder(cfg)
        self.ref_enc = MelStyleEncoder(
            cfg.ref_bins, style_hidden=cfg.ref_enc_hidden, style_vector_dim=cfg.gin_channels, dropout=cfg.p_dropout
        )
        k = 2 if cfg.semantic_frame_rate == "25hz" else 1
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.ssl_dim, k, stride=k)
        self.quantizer = ResidualVectorQuantizer(dimension=cfg.ssl_dim, n_q=1, bins=cfg.codebook_size)
        width = flow.bridge_channels
        self.bridge = nn.Sequential(nn.Conv1d(cfg.hidden_channels, width, 1), nn.LeakyReLU())
        self.wns1 = ConditionEncoder(width, flow.wns1_layers, cfg.gin_channels)
        self.linear_mel = nn.Conv1d(width, flow.mel_channels, 1)  # kept for the official key set; unused by v3/v4
        self.cfm = CFM(flow.mel_channels, DiT(flow))
        # Upstream trains v3/v4 with the content path frozen (freeze_quantizer): it never learns.
        for frozen in (self.ssl_proj, self.quantizer, self.enc_p):
            frozen.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> SynthesizerTrnV3:
        super().train(mode)
        for frozen in (self.ssl_proj, self.quantizer, self.enc_p):
            frozen.eval()
        return self

    @property
    def chunk_sizes(self):
        return CHUNKS[self.version]

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_upstream_state_dict(
        cls, state_dict: dict[str, torch.Tensor], version: str = "v4", config: S2ModelConfig | None = None
    ) -> SynthesizerTrnV3:
        """An eval-mode model from upstream-named weights (a full v3/v4 file's `weight`, merged LoRA, or ours)."""
        if config is None and version not in FLOW_VERSIONS:
            raise CheckpointError(f"s2 version {version!r} is not a flow-matching family (supported: v3, v4)")
        cfg = config if config is not None else official_config("s2", version).model
        with torch.device("meta"):
            model = cls(cfg)
        weights = fp32_copy(state_dict)
        check_layout(model, weights, f"s2 {cfg.version}", "SynthesizerTrnV3", "a v3/v4 SoVITS file")
        model.load_state_dict(weights, strict=True, assign=True)
        # Non-persistent buffers (the text position table) are not in the file: rebuild them off the meta device.
        model.cfm.estimator.text_embed.reset_buffers()
        return model.eval()

    # ----------------------------------------------------------------------------------------- inference
    def reference_embedding(self, refer: torch.Tensor) -> torch.Tensor:
        """ge [B, gin, 1] from a reference linear spectrogram [B, bins, F] (the first 704 bins are used)."""
        if refer.dim() != 3 or refer.size(1) < self.ref_bins:
            raise ValueError(f"refer: expected a spectrogram [B, >= {self.ref_bins}, F], got {tuple(refer.shape)}")
        refer = refer.to(self.ssl_proj.weight.dtype)
        mask = torch.ones(refer.size(0), 1, refer.size(2), dtype=refer.dtype, device=refer.device)
        return self.ref_enc(refer[:, : self.ref_bins] * mask, mask)

    def extract_latent(self, ssl: torch.Tensor) -> torch.Tensor:
        """HuBERT features [B, ssl_dim, T] (50 Hz) -> semantic codes [B, 1, T // 2] long."""
        with torch.inference_mode():
            codes = self.quantizer.encode(self.ssl_proj(ssl))  # [n_q, B, T/2]
        return codes.transpose(0, 1).clone()

    def _features(self, x: torch.Tensor, lengths: torch.Tensor, ge: torch.Tensor) -> torch.Tensor:
        """Content hidden [B, H, T] -> condition features [B, 512, T * upsample] (wns1 masked to `lengths`)."""
        fea = F.interpolate(self.bridge(x), scale_factor=FEATURE_UPSAMPLE[self.version], mode="nearest")
        return self.wns1(fea, lengths, ge)

    @torch.no_grad()
    def decode_encp(
        self,
        codes: torch.Tensor,
        text: torch.Tensor,
        refer: torch.Tensor,
        ge: torch.Tensor | None = None,
        speed: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """codes [1, B, N], phones [B, L], reference spectrogram [B, bins, F] -> (fea [B, 512, T], ge [B, gin, 1])."""
        if ge is None:
            ge = self.reference_embedding(refer)
        n = codes.size(2)
        y_lengths = torch.tensor([n * 2], device=codes.device)
        per_token = FRAMES_PER_TOKEN[self.version]
        size = int(n * per_token) if speed == 1 else int(n * per_token / speed) + 1
        quantized = self.quantizer.decode(codes)  # [B, 768, N]
        if self.cfg.semantic_frame_rate == "25hz":
            quantized = F.interpolate(quantized, scale_factor=2, mode="nearest")
        text_lengths = torch.tensor([text.size(-1)], device=text.device)
        x, _, _, _ = self.enc_p(quantized, y_lengths, text, text_lengths, ge, speed)
        return self._features(x, torch.tensor([size], device=codes.device), ge), ge

    @torch.no_grad()
    def sample_mel(
        self,
        fea_ref: torch.Tensor,
        mel_ref: torch.Tensor,
        fea: torch.Tensor,
        sample_steps: int,
        noises: list[Noise] | Noise | None = None,
    ) -> torch.Tensor:
        """Normalised mel [1, 100, T] of `fea`, prompted by the reference's features and normalised mel."""
        return decode_chunked(self.cfm, fea_ref, mel_ref, fea, self.chunk_sizes, sample_steps, noises)

    # ------------------------------------------------------------------------------------------ training
    def forward(
        self,
        ssl: torch.Tensor,
        spec: torch.Tensor,
        spec_lengths: torch.Tensor,
        mel: torch.Tensor,
        mel_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The velocity loss of one batch: ssl [B, 768, 2N], spec [B, 1025, 2N], normalised mel [B, 100, Tm].

        A random prompt of up to 2/3 of each target mel is given; its frames are not scored (upstream's forward).
        """
        spec_mask = sequence_mask(spec_lengths, spec.size(2)).unsqueeze(1).to(spec.dtype)
        ge = self.ref_enc(spec[:, : self.ref_bins] * spec_mask, spec_mask)
        with torch.no_grad():
            quantized = self.quantizer.decode(self.quantizer.encode(self.ssl_proj(ssl)))
            quantized = F.interpolate(quantized, scale_factor=2, mode="nearest")
            x, _, _, _ = self.enc_p(quantized, spec_lengths, text, text_lengths, ge)
        fea = self._features(x, mel_lengths, ge)
        b = ssl.size(0)
        prompt_max = mel_lengths * 2 / 3
        u = torch.rand((b,), generator=generator, device=fea.device)
        prompt_lens = (u * prompt_max).floor().long()
        t = min(mel.size(-1), fea.size(-1))
        return self.cfm.loss(mel[:, :, :t], mel_lengths.clamp(max=t), prompt_lens, fea[:, :, :t], generator)
