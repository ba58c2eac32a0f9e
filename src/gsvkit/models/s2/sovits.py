"""SoVITS (`SynthesizerTrn`): semantic codes + phones + a reference spectrogram -> 32 kHz waveform.

Computes exactly what upstream GPT-SoVITS `module/models.py::SynthesizerTrn` (v1/v2) computes, with the same
module and parameter names, so an official state dict loads with strict matching:

    ref spec [B, 1025, F] --ref_enc (first 704 bins for v2)--> ge [B, 512, 1]
    codes [n_q, B, N] --codebook--> [B, 768, N] --x2 nearest--> [B, 768, 2N]
        --enc_p (ssl 3 layers | phones 6 layers | MRTE(ge) | 3 layers | speed | proj)--> m_p, logs_p [B, 192, T]
    z_p = m_p + eps * exp(logs_p) * noise_scale --flow^-1(ge)--> z --dec (HiFi-GAN, x640, ge)--> wav [B, 1, 640T]

Training adds the posterior encoder enc_q (linear spectrogram -> z) and the forward flow z -> z_p.

`set_precision("bf16")` runs dec, ~95 % of decode time, in bfloat16 (an inference setting of the same model).

v2Pro/v2ProPlus (`cfg.is_pro`) add a speaker-verification branch: ge = PReLU(ref_enc(spec) + sv_emb(e)) with e the
reference's [B, 20480] ERes2NetV2 embedding (gsvkit.models.sv), gin 1024; MRTE gets ge_to512(ge), flow and decoder
the 1024-d ge. With several references each has its own e and the ge are averaged after the PReLU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from gsvkit.config import S2ModelConfig, official_config
from gsvkit.errors import CheckpointError, ConfigError
from gsvkit.models.modules import (
    LRELU_SLOPE,
    MRTE,
    WN,
    Conv1d,
    ConvTranspose1d,
    Encoder,
    MelStyleEncoder,
    ResBlock1,
    ResBlock2,
    ResidualCouplingBlock,
    ResidualCouplingLayer,
    fold_weight_norm,
    from_rows,
    rand_slice_segments,
    recompute_weight_norm,
    sequence_mask,
    to_rows,
    weight_norm,
)
from gsvkit.models.s2.quantizer import ResidualVectorQuantizer

__all__ = [
    "S2_PRECISIONS",
    "Generator",
    "PosteriorEncoder",
    "ResidualCouplingBlock",
    "S2TrainOutput",
    "SynthesizerTrn",
    "TextEncoder",
    "native_bf16",
    "resolve_s2_precision",
]

S2_PRECISIONS = ("auto", "fp32", "bf16")  # s2 decoder formats for inference; see `SynthesizerTrn.set_precision`
# Input frames per bf16 decoder call (`Generator.forward_windows`), each one set of oneDNN kernels built at load:
# 32 holds streaming's default first window (10 tokens, 20 frames), 48 short tails, 160 (3.2 s of audio at 50 Hz)
# the windows of longer streams, 512 a whole fragment of up to about 10 s. `decode_window` picks one per call.
DECODE_WINDOWS = (32, 48, 160, 512)


def decode_window(frames: int, context: int, windows: Sequence[int] = DECODE_WINDOWS) -> int:
    """The window of `windows` that decodes `frames` input frames with the fewest frames computed (calls x window;
    the smaller window on a tie). After the first, each call of a w-frame window advances w - 2 * context frames
    (`Generator.forward_windows`), so a long input may cost less in one big window than in many overlapping ones."""

    def computed(w: int) -> int:
        return w if frames <= w else w * (1 + math.ceil((frames - w) / (w - 2 * context)))

    return min((w for w in windows if w > 2 * context), key=lambda w: (computed(w), w))


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes bfloat16 convolutions in hardware (a CPU with AMX or AVX512-BF16). Elsewhere
    oneDNN emulates bf16 and it is slower than fp32."""
    if torch.device(device).type != "cpu":
        return False
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def resolve_s2_precision(precision: str, device: str | torch.device = "cpu", hifigan: bool = True) -> str:
    """`S2_PRECISIONS` -> "fp32" | "bf16". "auto": bf16 on a CPU that computes it natively (`native_bf16`), fp32
    elsewhere (GPUs, older CPUs) and for the v3/v4 flow models, which have no HiFi-GAN decoder to convert."""
    if precision not in S2_PRECISIONS:
        raise ConfigError(f"s2 precision {precision!r} is not one of {', '.join(S2_PRECISIONS)}")
    if precision == "auto":
        return "bf16" if hifigan and native_bf16(device) else "fp32"
    if precision == "bf16" and not hifigan:
        raise ConfigError("s2 precision bf16 applies to v1/v2/v2Pro decoders only; use fp32 or auto for v3/v4")
    return precision


def _length_mask(lengths: torch.Tensor, max_length: int, dtype: torch.dtype) -> torch.Tensor:
    return sequence_mask(lengths, max_length).unsqueeze(1).to(dtype)  # [B, 1, T]


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device).to(device=x.device, dtype=x.dtype)


def _check_ids(name: str, ids: torch.Tensor, size: int) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
        raise ValueError(
            f"{name}: ids must lie in [0, {size}) for this model, got [{int(ids.min())}, {int(ids.max())}]"
        )


def fp32_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fresh copies of upstream weights, floating tensors as fp32 (official files are often fp16)."""
    return {
        k: (v.to(torch.float32, copy=True) if torch.is_floating_point(v) else v.clone()) for k, v in state_dict.items()
    }


def check_layout(model: nn.Module, weights: dict[str, torch.Tensor], what: str, layout: str, hint: str) -> None:
    """CheckpointError listing missing, unexpected and wrong-shape keys of `weights` against `model`."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(
        f"{k} {tuple(weights[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"{what} weights do not match the {layout} layout; " + "; ".join(parts) + f". Is this {hint}?"
        )


# ---------------------------------------------------------------------------------------------- submodules
class TextEncoder(nn.Module):
    """The prior encoder: quantised content frames + phones + ge -> (hidden, m_p, logs_p, mask) at 50 Hz."""

    def __init__(self, cfg: S2ModelConfig) -> None:
        super().__init__()
        hidden, p = cfg.hidden_channels, cfg.p_dropout
        self.out_channels = cfg.inter_channels
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, hidden, 1)
        self.encoder_ssl = Encoder(hidden, cfg.filter_channels, cfg.n_heads, cfg.ssl_layers, cfg.kernel_size, p)
        self.encoder_text = Encoder(hidden, cfg.filter_channels, cfg.n_heads, cfg.n_layers, cfg.kernel_size, p)
        self.text_embedding = nn.Embedding(cfg.symbols, hidden)
        self.mrte = MRTE(hidden, cfg.mrte_channels, hidden, cfg.mrte_heads)
        self.encoder2 = Encoder(hidden, cfg.filter_channels, cfg.n_heads, cfg.encoder2_layers, cfg.kernel_size, p)
        self.proj = nn.Conv1d(hidden, cfg.inter_channels * 2, 1)

    def forward(
        self,
        y: torch.Tensor,
        y_lengths: torch.Tensor,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        ge: torch.Tensor | None,
        speed: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """y [B, ssl_dim, T], text [B, L] -> (x [B, H, T'], m [B, C, T'], logs [B, C, T'], mask [B, 1, T'])."""
        y_mask = _length_mask(y_lengths, y.size(2), y.dtype)
        y = self.ssl_proj(y * y_mask) * y_mask
        y = self.encoder_ssl(y * y_mask, y_mask)

        text_mask = _length_mask(text_lengths, text.size(1), y.dtype)
        text = self.text_embedding(text).transpose(1, 2)  # [B, H, L]
        text = self.encoder_text(text * text_mask, text_mask)
        y = self.mrte(y, y_mask, text, text_mask, ge)
        y = self.encoder2(y * y_mask, y_mask)
        if speed != 1:
            # Upstream's length rule, +1 included: T' = int(T / speed) + 1.
            y = F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")
            y_mask = F.interpolate(y_mask, size=y.shape[-1], mode="nearest")
        stats = self.proj(y) * y_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        return y, m, logs, y_mask


class PosteriorEncoder(nn.Module):
    """Linear spectrogram [B, bins, T] -> z ~ N(m_q, exp(logs_q)) [B, C, T] (training only)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        g: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if g is not None:
            g = g.detach()  # the style vector is trained through the prior and decoder only
        x_mask = _length_mask(x_lengths, x.size(2), x.dtype)
        x = self.enc(self.pre(x) * x_mask, x_mask, g=g)
        stats = self.proj(x) * x_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        z = (m + _randn_like(m, generator) * torch.exp(logs)) * x_mask
        return z, m, logs, x_mask


class Generator(nn.Module):
    """HiFi-GAN decoder: z [B, C, T] (+ ge) -> waveform [B, 1, T * prod(upsample_rates)] in [-1, 1]."""

    def __init__(
        self,
        initial_channel: int,
        resblock: str,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        gin_channels: int = 0,
        post_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.hop = math.prod(upsample_rates)  # output samples per input frame
        # Receptive half-width in input frames: conv_pre, then per stage its transposed conv and its widest resblock
        # (ResBlock1 adds a dilation-1 conv after each dilated one), then conv_post.
        frames, rate = 3.0, 1
        for u, k in zip(upsample_rates, upsample_kernel_sizes, strict=True):
            frames += math.ceil(k / u) / rate
            rate *= u
            blocks = zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True)
            frames += max(sum((ks - 1) // 2 * (d + (resblock == "1")) for d in ds) for ks, ds in blocks) / rate
        self._context = math.ceil(frames + 3 / rate) + 1
        self.conv_pre = Conv1d(initial_channel, upsample_initial_channel, 7, 1, padding=3)
        block = ResBlock1 if resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True)):
            up = ConvTranspose1d(
                upsample_initial_channel // 2**i, upsample_initial_channel // 2 ** (i + 1), k, u, padding=(k - u) // 2
            )
            self.ups.append(weight_norm(up))
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i in range(len(self.ups)):
            ch = upsample_initial_channel // 2 ** (i + 1)
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(block(ch, k, tuple(d)))
        self.conv_post = Conv1d(ch, 1, 7, 1, padding=3, bias=post_bias)  # bias: the v4 vocoder
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        # Runs in the [B, C, 1, T] channels-last layout (gsvkit.models.modules.conv): the same convolutions, faster.
        x = self.conv_pre(to_rows(x))  # [B, U, 1, T]
        if g is not None:
            x = x + self.cond(g).unsqueeze(-1)  # ge [B, gin, 1] -> [B, U, 1, 1]
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)  # a new tensor: summed into in place
            for block in blocks[1:]:
                xs.add_(block(x))
            x = xs.div_(self.num_kernels)
        x = F.leaky_relu(x)  # torch's default slope 0.01 here, as upstream (not LRELU_SLOPE)
        return torch.tanh(from_rows(self.conv_post(x)))  # [B, 1, T * prod(upsample_rates)]

    def context_frames(self) -> int:
        """Input frames on each side that can reach one output sample (half the receptive field, rounded up, plus
        one): a window with this much true context on both sides gives the whole sequence's output there."""
        return self._context

    def forward_windows(self, x: torch.Tensor, g: torch.Tensor | None = None, window: int = 160) -> torch.Tensor:
        """`forward` computed on windows of exactly `window` input frames, so every convolution sees one shape
        whatever the length of x: oneDNN builds its bf16 kernels once per shape, seconds for the whole decoder.

        Windows overlap by twice `context_frames()` and each contributes only the samples its context makes exact,
        so for T > window the result is `forward(x)`'s up to rounding. A shorter x is zero-padded to one window:
        its last `context_frames()` frames then differ slightly from `forward(x)`.
        """
        t, hop, ctx = x.shape[-1], self.hop, self.context_frames()
        if window <= 2 * ctx:
            raise ValueError(f"window must exceed {2 * ctx} frames (twice the decoder's context)")
        if t <= window:
            return self(F.pad(x, (0, window - t)), g)[..., : t * hop]
        starts = [*range(0, t - window, window - 2 * ctx), t - window]
        out = x.new_empty(x.shape[0], 1, t * hop)
        for s in starts:
            y = self(x[..., s : s + window], g)  # [B, 1, window * hop]
            lo, hi = (0 if s == 0 else s + ctx), (t if s + window == t else s + window - ctx)
            out[..., lo * hop : hi * hop] = y[..., (lo - s) * hop : (hi - s) * hop]
        return out


# ----------------------------------------------------------------------------------------------- the model
@dataclass
class S2TrainOutput:
    """What the s2 losses need from one training forward (upstream's 7-tuple, named)."""

    y_hat: torch.Tensor  # [B, 1, segment_size * hop] decoded waveform slice
    ids_slice: torch.Tensor  # [B] start frame of each slice
    x_mask: torch.Tensor  # [B, 1, T] prior (enc_p) mask
    z_mask: torch.Tensor  # [B, 1, T] posterior mask
    z: torch.Tensor  # [B, C, T] posterior sample
    z_p: torch.Tensor  # [B, C, T] flow(z)
    m_p: torch.Tensor  # [B, C, T]
    logs_p: torch.Tensor  # [B, C, T]
    m_q: torch.Tensor  # [B, C, T]
    logs_q: torch.Tensor  # [B, C, T]
    commit_loss: torch.Tensor  # scalar; 0 when the quantiser is frozen
    quantized: torch.Tensor  # [B, ssl_dim, T] codebook vectors upsampled to 50 Hz
    ge: torch.Tensor  # [B, gin, 1] reference embedding


class SynthesizerTrn(nn.Module):
    """GPT-SoVITS s2 (v1/v2/v2Pro/v2ProPlus), built from an `S2ModelConfig`; state-dict keys are upstream's."""

    def __init__(self, cfg: S2ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.version = cfg.version
        self.ref_bins = cfg.ref_bins
        self.semantic_frame_rate = cfg.semantic_frame_rate
        self.freeze_quantizer = cfg.freeze_quantizer
        self.segment_size = cfg.segment_size
        # Construction order = upstream's, so state_dict() lists keys in the official order.
        self.enc_p = TextEncoder(cfg)
        self.dec = Generator(
            cfg.inter_channels,
            cfg.resblock,
            cfg.resblock_kernel_sizes,
            cfg.resblock_dilation_sizes,
            cfg.upsample_rates,
            cfg.upsample_initial_channel,
            cfg.upsample_kernel_sizes,
            cfg.gin_channels,
        )
        self.enc_q: PosteriorEncoder | None = self._new_posterior_encoder()
        self.flow = ResidualCouplingBlock(cfg.flow_layers, lambda: ResidualCouplingLayer(
            cfg.inter_channels, cfg.hidden_channels, 5, 1, cfg.flow_wn_layers, gin_channels=cfg.gin_channels,
            mean_only=True,
        ))  # fmt: skip
        self.ref_enc = MelStyleEncoder(
            cfg.ref_bins, style_hidden=cfg.ref_enc_hidden, style_vector_dim=cfg.gin_channels, dropout=cfg.p_dropout
        )
        k = 2 if cfg.semantic_frame_rate == "25hz" else 1
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.ssl_dim, k, stride=k)
        self.quantizer = ResidualVectorQuantizer(dimension=cfg.ssl_dim, n_q=1, bins=cfg.codebook_size)
        if self.freeze_quantizer:
            # Upstream runs them in eval mode under no_grad: they never learn, so they need no gradients.
            self.ssl_proj.requires_grad_(False)
            self.quantizer.requires_grad_(False)
        self.is_pro = cfg.is_pro
        if self.is_pro:
            self.sv_emb = nn.Linear(cfg.sv_dim, cfg.gin_channels)
            self.ge_to512 = nn.Linear(cfg.gin_channels, cfg.mrte_channels)  # MRTE adds ge to its 512-d stream
            self.prelu = nn.PReLU(num_parameters=cfg.gin_channels)
        self.train()  # applies the frozen parts' eval mode from the start

    def _new_posterior_encoder(self) -> PosteriorEncoder:
        c = self.cfg
        return PosteriorEncoder(
            c.spec_channels, c.inter_channels, c.hidden_channels, 5, 1, c.enc_q_layers, gin_channels=c.gin_channels
        )

    def add_posterior_encoder(self) -> None:
        """Give a model loaded from an export (no enc_q.* keys) a freshly initialised posterior encoder."""
        if self.enc_q is None:
            self.enc_q = self._new_posterior_encoder().to(self.ssl_proj.weight.device)

    def train(self, mode: bool = True) -> SynthesizerTrn:
        super().train(mode)
        if self.freeze_quantizer:
            # Frozen: the codebook must not follow its EMA, and the lookup is not straight-through.
            self.ssl_proj.eval()
            self.quantizer.eval()
        return self

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_upstream_state_dict(
        cls, state_dict: dict[str, torch.Tensor], version: str = "v2", config: S2ModelConfig | None = None
    ) -> SynthesizerTrn:
        """An eval-mode model from upstream-named weights (G pretrained, export `["weight"]`, or ours).

        fp16 tensors are cast to fp32. `enc_q.*` may be absent (exports drop it): the model then has no posterior
        encoder (`add_posterior_encoder()` makes a fresh one for training). Anything else missing, unexpected or
        of the wrong shape raises CheckpointError listing the keys.
        """
        if config is None and version not in ("v1", "v2", "v2Pro", "v2ProPlus"):
            raise CheckpointError(f"s2 version {version!r} is not supported here (supported: v1, v2, v2Pro, v2ProPlus)")
        cfg = config if config is not None else official_config("s2", version).model
        emb = state_dict.get("enc_p.text_embedding.weight")
        if emb is not None and emb.shape[0] != cfg.symbols:
            guess = {322: "v1", 732: "v2"}.get(int(emb.shape[0]), "unknown")
            raise CheckpointError(
                f"s2 weights have a {emb.shape[0]}-row phone table ({guess}) but the model was built as "
                f"{cfg.version} ({cfg.symbols} rows); load them with version='{guess}'"
            )
        # Built on the meta device: every tensor comes from `state_dict`, so random init would be wasted time.
        with torch.device("meta"):
            model = cls(cfg)
        weights = fp32_copy(state_dict)
        if not any(k.startswith("enc_q.") for k in weights):
            model.enc_q = None
        check_layout(model, weights, f"s2 {cfg.version}", "SynthesizerTrn", "an s2 (SoVITS) file of this version")
        model.load_state_dict(weights, strict=True, assign=True)
        recompute_weight_norm(model)
        return model.eval()

    # ----------------------------------------------------------------------------------------- inference
    def for_inference(self) -> SynthesizerTrn:
        """In place: keep only what synthesis uses. Every weight norm is folded (a weight-normed layer holds g and v
        beside the weight it computes from them on each call: the same values, computed once; 58 % of v2's
        inference parameters are weight-normed) and the posterior encoder, which only training uses, is dropped.
        At official v2 size the model then holds 169 MB of tensors instead of 347. Inference only, as bf16 is: the
        state dict no longer has upstream's keys. Returns self, in eval mode."""
        fold_weight_norm(self)
        self.enc_q = None
        return self.eval()

    def set_precision(self, precision: str) -> SynthesizerTrn:
        """In place (as `nn.Module.to`): run the HiFi-GAN decoder in "fp32" or "bf16" (`resolve_s2_precision`
        first for "auto"); everything before it stays in the model's dtype. bf16 folds the decoder's weight norm
        and stores its weights in bfloat16 once, so no cast is repeated per call; decoding then runs on windows of
        `DECODE_WINDOWS` frames, whose kernels are built here (a few seconds, once). Inference only: the state dict
        no longer has upstream's keys, so save from a model loaded in fp32. Returns self."""
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"s2 precision {precision!r}: use fp32 or bf16 (resolve_s2_precision maps auto)")
        if precision == "fp32":
            if self.precision == "bf16":
                raise ConfigError("this s2 decoder was converted to bf16; load the file again for fp32")
            return self
        if self.precision != "bf16":
            fold_weight_norm(self.dec).to(torch.bfloat16).requires_grad_(False)
            with torch.inference_mode():  # build the windows' bf16 kernels now, not in the first request
                p = self.dec.conv_pre.weight
                for window in DECODE_WINDOWS:
                    self.dec(torch.zeros(1, p.shape[1], window, dtype=p.dtype, device=p.device))
        return self

    @property
    def precision(self) -> str:
        """ "bf16" after `set_precision("bf16")`, else "fp32" (the decoder in the model's dtype)."""
        return "bf16" if self.dec.conv_pre.weight.dtype == torch.bfloat16 else "fp32"

    def reference_embedding(
        self,
        refer: torch.Tensor | Sequence[torch.Tensor],
        sv_emb: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """ge [B, gin, 1] from one reference spectrogram [B, bins, F] or a list of them (their ge averaged).

        v2Pro/v2ProPlus need `sv_emb`: one [B, sv_dim] speaker embedding per reference (a tensor for one
        reference, a list of the same length as `refer` for several).
        """
        refs = [refer] if isinstance(refer, torch.Tensor) else list(refer)
        embs: list[torch.Tensor | None]
        if not refs:
            raise ValueError("refer: give at least one reference spectrogram")
        if self.is_pro:
            if sv_emb is None:
                raise ValueError(
                    f"this {self.version} model needs sv_emb: one [B, {self.cfg.sv_dim}] speaker embedding per "
                    "reference (gsvkit.models.sv.SpeakerEncoder.embed)"
                )
            embs = [sv_emb] if isinstance(sv_emb, torch.Tensor) else list(sv_emb)
            if len(embs) != len(refs):
                raise ValueError(f"sv_emb: {len(embs)} embeddings for {len(refs)} references; give one per reference")
        else:
            embs = [None] * len(refs)
        ges = [self._one_reference(r, e) for r, e in zip(refs, embs, strict=True)]
        return ges[0] if isinstance(refer, torch.Tensor) else torch.stack(ges, 0).mean(0)

    def _one_reference(self, refer: torch.Tensor, sv_emb: torch.Tensor | None = None) -> torch.Tensor:
        if refer.dim() != 3 or refer.size(1) < self.ref_bins:
            raise ValueError(f"refer: expected a spectrogram [B, >= {self.ref_bins}, F], got {tuple(refer.shape)}")
        refer = refer.to(self.ssl_proj.weight.dtype)  # spectrograms come as fp32; the model may be half precision
        mask = torch.ones(refer.size(0), 1, refer.size(2), dtype=refer.dtype, device=refer.device)  # [B, 1, F]
        return self._add_speaker(self.ref_enc(refer[:, : self.ref_bins] * mask, mask), sv_emb)

    def _add_speaker(self, ge: torch.Tensor, sv_emb: torch.Tensor | None) -> torch.Tensor:
        """v2Pro: ge [B, gin, 1] + sv_emb(e [B, sv_dim]) -> PReLU; other versions: ge unchanged."""
        if not self.is_pro:
            return ge
        if sv_emb is None or sv_emb.dim() != 2 or sv_emb.size(1) != self.cfg.sv_dim:
            got = None if sv_emb is None else tuple(sv_emb.shape)
            raise ValueError(f"sv_emb: expected [B, {self.cfg.sv_dim}] speaker embeddings, got {got}")
        sv = self.sv_emb(sv_emb.to(device=ge.device, dtype=self.sv_emb.weight.dtype))  # [B, gin]
        return self.prelu(ge + sv.unsqueeze(-1))

    def _mrte_ge(self, ge: torch.Tensor) -> torch.Tensor:
        """The ge MRTE adds to its stream: v2Pro projects the 1024-d ge to MRTE's width."""
        return self.ge_to512(ge.transpose(1, 2)).transpose(1, 2) if self.is_pro else ge

    def _upsample_codes(self, quantized: torch.Tensor) -> torch.Tensor:
        if self.semantic_frame_rate == "25hz":  # 25 Hz codes -> 50 Hz spectrogram frames
            quantized = F.interpolate(quantized, size=int(quantized.shape[-1] * 2), mode="nearest")
        return quantized

    def extract_latent(self, ssl: torch.Tensor) -> torch.Tensor:
        """HuBERT features [B, ssl_dim, T] (50 Hz) -> semantic codes [B, n_q=1, T // 2] (25 Hz) long."""
        with torch.inference_mode():
            codes = self.quantizer.encode(self.ssl_proj(ssl))  # [n_q, B, T/2]
        # A copy made outside inference mode is an ordinary tensor: callers may modify it or train on it.
        return codes.transpose(0, 1).clone()

    def decode(
        self,
        codes: torch.Tensor,
        phones: torch.Tensor,
        refer: torch.Tensor | Sequence[torch.Tensor],
        noise_scale: float = 0.5,
        speed: float = 1.0,
        generator: torch.Generator | None = None,
        sv_emb: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Synthesize: codes [B, 1, N] long, phones [B, L] long, refer [B, bins, F] or a list -> wav [B, 1, S].

        v2Pro/v2ProPlus: `sv_emb` holds one [B, sv_dim] speaker embedding per reference.

        S = hop * (2N) at speed 1, hop * (int(2N / speed) + 1) otherwise. The noise is drawn even when
        noise_scale is 0 (so the random stream advances as upstream's does); pass `generator` to make it
        reproducible without touching the global RNG.
        """
        if speed <= 0:
            raise ValueError(f"speed must be > 0 (got {speed})")
        _check_ids("codes", codes, self.cfg.codebook_size)
        _check_ids("phones", phones, self.cfg.symbols)
        with torch.inference_mode():
            wav = self._decode(codes, phones, refer, noise_scale, speed, generator, sv_emb)
        return wav.clone()  # an ordinary tensor (see extract_latent)

    def _decode(
        self,
        codes: torch.Tensor,
        phones: torch.Tensor,
        refer: torch.Tensor | Sequence[torch.Tensor],
        noise_scale: float,
        speed: float,
        generator: torch.Generator | None,
        sv_emb: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        ge = self.reference_embedding(refer, sv_emb)
        b = codes.size(0)
        quantized = self._upsample_codes(self.quantizer.decode(codes.transpose(0, 1)))  # [B, D, 2N]
        y_lengths = torch.full((b,), quantized.size(2), dtype=torch.long, device=codes.device)
        text_lengths = torch.full((b,), phones.size(-1), dtype=torch.long, device=phones.device)
        _, m_p, logs_p, y_mask = self.enc_p(quantized, y_lengths, phones, text_lengths, self._mrte_ge(ge), speed)
        z_p = m_p + _randn_like(m_p, generator) * torch.exp(logs_p) * noise_scale
        z = self.flow(z_p, y_mask, g=ge, reverse=True)
        if self.precision == "bf16":  # fixed-size windows: one oneDNN kernel build per shape (see forward_windows)
            bf = torch.bfloat16
            window = decode_window(z.shape[-1], self.dec.context_frames())
            return self.dec.forward_windows((z * y_mask).to(bf), ge.to(bf), window).to(z.dtype)
        return self.dec(z * y_mask, g=ge)

    @torch.no_grad()
    def infer(
        self,
        ssl: torch.Tensor,
        spec: torch.Tensor,
        spec_lengths: torch.Tensor,
        phones: torch.Tensor,
        phone_lengths: torch.Tensor,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
        sv_emb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-utterance reconstruction for validation: a batch's own spectrogram is the reference.

        v2Pro/v2ProPlus take the batch's speaker embeddings `sv_emb` [B, sv_dim] (upstream's `infer` has no Pro
        branch; this follows its `decode`). Returns (wav [B, 1, T * hop], y_mask [B, 1, T]); samples past
        `spec_lengths * hop` are padding.
        """
        spec_mask = _length_mask(spec_lengths, spec.size(2), spec.dtype)
        ge = self._add_speaker(self.ref_enc(spec[:, : self.ref_bins] * spec_mask, spec_mask), sv_emb)
        quantized = self._upsample_codes(self.quantizer.decode(self.quantizer.encode(self.ssl_proj(ssl))))
        _, m_p, logs_p, y_mask = self.enc_p(quantized, spec_lengths, phones, phone_lengths, self._mrte_ge(ge))
        z_p = m_p + _randn_like(m_p, generator) * torch.exp(logs_p) * noise_scale
        z = self.flow(z_p, y_mask, g=ge, reverse=True)
        return self.dec(z * y_mask, g=ge), y_mask

    # ------------------------------------------------------------------------------------------ training
    def forward(
        self,
        ssl: torch.Tensor,
        ssl_lengths: torch.Tensor | None,
        spec: torch.Tensor,
        spec_lengths: torch.Tensor,
        phones: torch.Tensor,
        phone_lengths: torch.Tensor,
        generator: torch.Generator | None = None,
        sv_emb: torch.Tensor | None = None,
    ) -> S2TrainOutput:
        """Training step: ssl [B, ssl_dim, Ts] (50 Hz), spec [B, bins, T] (T == 2 * (Ts // 2)), phones [B, L].

        v2Pro/v2ProPlus also take the clips' speaker embeddings `sv_emb` [B, sv_dim].

        As upstream, masks come from `spec_lengths` (ssl_lengths is accepted for symmetry and not used), the
        reference embedding is computed from the target spectrogram itself, and the decoder sees a random
        `segment_size`-frame slice of z.
        """
        if self.enc_q is None:
            raise RuntimeError(
                "this s2 model has no posterior encoder (it was loaded from an export without enc_q.* weights); "
                "train from a pretrained G file, or call model.add_posterior_encoder() first"
            )
        y_mask = _length_mask(spec_lengths, spec.size(2), spec.dtype)
        ge = self._add_speaker(self.ref_enc(spec[:, : self.ref_bins] * y_mask, y_mask), sv_emb)  # [B, gin, 1]
        # Like upstream, the code lookup runs outside autocast: nearest-code distances in half precision would pick
        # different codes than the ones extract_latent gave the s1 training data.
        with (
            torch.autocast(device_type=ssl.device.type, enabled=False),
            torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_quantizer),
        ):
            quantized, _, commit_loss = self.quantizer(self.ssl_proj(ssl.to(self.ssl_proj.weight.dtype)))
        quantized = self._upsample_codes(quantized)  # [B, D, 2 * (Ts // 2)]
        if quantized.size(2) != spec.size(2):
            raise ValueError(
                f"ssl frames ({ssl.size(2)} -> {quantized.size(2)} after the 25 Hz round trip) do not match "
                f"spectrogram frames ({spec.size(2)}); pad/crop the batch so they are equal and even"
            )
        _, m_p, logs_p, x_mask = self.enc_p(quantized, spec_lengths, phones, phone_lengths, self._mrte_ge(ge))
        z, m_q, logs_q, z_mask = self.enc_q(spec, spec_lengths, g=ge, generator=generator)
        z_p = self.flow(z, z_mask, g=ge)
        z_slice, ids_slice = rand_slice_segments(z, spec_lengths, self.segment_size, generator=generator)
        y_hat = self.dec(z_slice, g=ge)
        return S2TrainOutput(
            y_hat=y_hat,
            ids_slice=ids_slice,
            x_mask=x_mask,
            z_mask=z_mask,
            z=z,
            z_p=z_p,
            m_p=m_p,
            logs_p=logs_p,
            m_q=m_q,
            logs_q=logs_q,
            commit_loss=commit_loss,
            quantized=quantized,
            ge=ge,
        )
