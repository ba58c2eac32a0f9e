"""Typed configuration for both models, read from and written to YAML.

Every config is a pydantic model that forbids unknown fields, so a misspelt key or a wrong value is an error
that names the field. The full config is saved next to every checkpoint (inside the safetensors metadata), so a
checkpoint alone is enough to rebuild its model (`config_from_json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, overload

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gsvkit.errors import ConfigError as ConfigError  # re-exported: configs raise it
from gsvkit.limits import check_architecture, read_yaml_file, short_repr
from gsvkit.training.config import CommonTrainConfig, MixupConfig, SpecAugmentConfig

ModelVersion = Literal["v1", "v2"]
# s2 families: v2Pro/v2ProPlus are v2 plus a speaker-verification branch (ProPlus also a wider decoder); s1 and the
# phone table stay v2's.
S2Version = Literal["v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4"]
PRO_VERSIONS = ("v2Pro", "v2ProPlus")
# v3/v4: v2's content encoder feeding a conditional flow-matching mel decoder (`SynthesizerTrnV3`) and a vocoder.
FLOW_VERSIONS = ("v3", "v4")

# Phone-symbol table sizes of the official models: v1's table is an exact prefix of v2's.
N_SYMBOLS = {"v1": 322, "v2": 732}
# s1's phone embedding has its own size: v1 pretrained GPT models use 512 rows (only 322 are reachable).
S1_PHONE_VOCAB = {"v1": 512, "v2": 732}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _drop_unused(values: Any, names: tuple[str, ...]) -> Any:
    """Remove keys that upstream configs (and older gsvkit files) carry but nothing here reads."""
    if isinstance(values, dict):
        return {k: v for k, v in values.items() if k not in names}
    return values


# ----------------------------------------------------------------------------------------------------------- s2
class FlowDecoderConfig(StrictModel):
    """The v3/v4 mel decoder: bridge -> wns1 (WaveNet) -> CFM with an F5-TTS-style DiT estimator (upstream sizes)."""

    dim: int = Field(1024, gt=0, description="DiT width")
    depth: int = Field(22, gt=0, description="DiT blocks")
    heads: int = Field(16, gt=0)
    dim_head: int = Field(64, gt=0)
    ff_mult: int = Field(2, gt=0)
    conv_layers: int = Field(4, ge=0, description="ConvNeXt-V2 blocks over the condition features")
    mel_channels: int = Field(100, gt=0)
    bridge_channels: int = Field(512, gt=0, description="width of bridge/wns1 = the DiT's condition width")
    wns1_layers: int = Field(8, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FlowDecoderConfig:
        if self.dim_head % 2:
            raise ValueError(f"dim_head={self.dim_head} must be even (rotary embedding)")
        if self.dim % 16 or self.dim < 16:
            raise ValueError(f"dim={self.dim} must be a multiple of 16 (grouped conv position embedding)")
        return self


class S2ModelConfig(StrictModel):
    """SoVITS (`SynthesizerTrn`) architecture. Defaults are upstream's `configs/s2.json` for v2."""

    version: S2Version = "v2"
    spec_channels: int = Field(1025, gt=0, description="linear spectrogram bins = filter_length // 2 + 1")
    inter_channels: int = Field(192, gt=0)
    hidden_channels: int = Field(192, gt=0)
    filter_channels: int = Field(768, gt=0)
    n_heads: int = Field(2, gt=0)
    n_layers: int = Field(6, gt=0, description="layers of the phone encoder (encoder_text)")
    kernel_size: int = Field(3, gt=0)
    p_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    resblock: Literal["1", "2"] = "1"
    resblock_kernel_sizes: list[int] = [3, 7, 11]
    resblock_dilation_sizes: list[list[int]] = [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    upsample_rates: list[int] = [10, 8, 2, 2, 2]
    upsample_initial_channel: int = Field(512, gt=0)
    upsample_kernel_sizes: list[int] = [16, 16, 8, 2, 2]
    gin_channels: int = Field(512, gt=0, description="width of the reference (style) embedding ge")
    use_spectral_norm: bool = False
    semantic_frame_rate: Literal["25hz", "50hz"] = "25hz"
    freeze_quantizer: bool = True
    ssl_dim: int = Field(768, gt=0, description="HuBERT feature width")
    codebook_size: int = Field(1024, gt=1)
    n_symbols: int | None = Field(None, description="phone table rows; None = 322 (v1) / 732 (v2)")
    ref_enc_bins: int | None = Field(None, description="spectrogram bins seen by ref_enc; None = all (v1) / 704 (v2)")
    ssl_layers: int = Field(3, gt=0, description="layers of encoder_ssl")
    encoder2_layers: int = Field(3, gt=0)
    mrte_channels: int = Field(512, gt=0)
    mrte_heads: int = Field(4, gt=0)
    enc_q_layers: int = Field(16, gt=0, description="WN layers of the posterior encoder (training only)")
    flow_layers: int = Field(4, gt=0, description="coupling layers in the flow")
    flow_wn_layers: int = Field(4, gt=0)
    ref_enc_hidden: int = Field(128, gt=0, description="MelStyleEncoder width")
    segment_size: int = Field(32, gt=0, description="decoder training slice in spectrogram frames")
    sv_dim: int = Field(
        20480, gt=0, description="speaker-verification embedding width (v2Pro/v2ProPlus; SpeakerEncoderConfig.dim)"
    )
    discriminator_channel_divisor: int = Field(
        1, description="divide the discriminator's widths (1 = upstream's 46.7 M; 16 for tiny smoke configs)"
    )
    flow: FlowDecoderConfig | None = Field(None, description="v3/v4 only: the mel decoder; None = official sizes")

    @field_validator("discriminator_channel_divisor")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        # Grouped convs need every narrowed width to stay divisible by its narrowed group count.
        if v < 1 or v & (v - 1):
            raise ValueError(f"must be a power of two >= 1 (got {v})")
        return v

    @model_validator(mode="after")
    def _check(self) -> S2ModelConfig:
        check_architecture(self, "s2")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        if self.hidden_channels % self.n_heads:
            raise ValueError(f"hidden_channels={self.hidden_channels} is not divisible by n_heads={self.n_heads}")
        if self.ref_enc_bins is not None and self.ref_enc_bins > self.spec_channels:
            raise ValueError(f"ref_enc_bins={self.ref_enc_bins} exceeds spec_channels={self.spec_channels}")
        return self

    @property
    def is_flow(self) -> bool:
        """v3/v4: a flow-matching mel decoder plus a separate vocoder instead of the HiFi-GAN decoder."""
        return self.version in FLOW_VERSIONS

    @property
    def flow_decoder(self) -> FlowDecoderConfig:
        return self.flow if self.flow is not None else FlowDecoderConfig()

    @property
    def is_pro(self) -> bool:
        """v2Pro/v2ProPlus: the reference embedding also takes a speaker-verification embedding."""
        return self.version in PRO_VERSIONS

    @property
    def text_version(self) -> ModelVersion:
        """The phone-symbol set (and s1 family) that goes with this s2 version."""
        return "v1" if self.version == "v1" else "v2"

    @property
    def symbols(self) -> int:
        return self.n_symbols if self.n_symbols is not None else N_SYMBOLS[self.text_version]

    @property
    def ref_bins(self) -> int:
        if self.ref_enc_bins is not None:
            return self.ref_enc_bins
        return self.spec_channels if self.version == "v1" else 704

    @property
    def hop_length(self) -> int:
        """Samples per spectrogram frame implied by the decoder's upsampling."""
        n = 1
        for r in self.upsample_rates:
            n *= r
        return n


class S2DataConfig(StrictModel):
    """Audio front end of s2: upstream's `data` section."""

    sampling_rate: int = Field(32000, gt=0)
    filter_length: int = Field(2048, gt=0)
    hop_length: int = Field(640, gt=0)
    win_length: int = Field(2048, gt=0)
    n_mel_channels: int = Field(128, gt=0)
    mel_fmin: float = Field(0.0, ge=0.0)
    mel_fmax: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _unused(cls, values: Any) -> Any:
        return _drop_unused(values, ("max_wav_value",))  # audio is read as float in [-1, 1]


class S2TrainConfig(CommonTrainConfig):
    """s2 optimisation. Defaults are upstream's; the shared sections are documented in `gsvkit.training.config`."""

    epochs: int = Field(8, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.8, 0.99)
    eps: float = Field(1e-9, gt=0)
    batch_size: int = Field(4, gt=0)
    lr_decay: float = Field(0.999875, gt=0, le=1.0)
    c_mel: float = 45.0
    c_kl: float = 1.0
    text_low_lr_rate: float = Field(0.4, gt=0)
    c_commit: float = Field(1.0, ge=0, description="weight of the quantizer commitment loss (kl_ssl upstream)")
    kl_anneal_steps: int = Field(0, ge=0, description="ramp the KL weight from kl_anneal_start*c_kl over N steps")
    kl_anneal_start: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: float | None = Field(None, gt=0, description="max grad norm of G and D; None = off (upstream)")
    min_items_per_epoch: int = Field(100, ge=0, description="small datasets repeat up to this many clips per epoch")
    max_clip_sec: float = Field(54.0, gt=0, description="training clips longer than this are skipped (upstream)")
    min_clip_sec: float = Field(0.6, ge=0, description="training clips shorter than this are skipped (upstream)")
    spec_augment: SpecAugmentConfig = SpecAugmentConfig()
    mixup: MixupConfig = MixupConfig()

    @model_validator(mode="before")
    @classmethod
    def _unused(cls, values: Any) -> Any:
        return _drop_unused(values, ("segment_size",))  # the decoder slice is model.segment_size (frames)


class S2Config(StrictModel):
    kind: Literal["s2"] = "s2"
    model: S2ModelConfig = S2ModelConfig()
    data: S2DataConfig = S2DataConfig()
    train: S2TrainConfig = S2TrainConfig()

    @model_validator(mode="after")
    def _check(self) -> S2Config:
        bins = self.data.filter_length // 2 + 1
        if self.model.spec_channels != bins:
            raise ValueError(f"model.spec_channels={self.model.spec_channels} but data.filter_length gives {bins}")
        if self.model.hop_length != self.data.hop_length:
            raise ValueError(
                f"product of model.upsample_rates={self.model.hop_length} must equal data.hop_length="
                f"{self.data.hop_length}"
            )
        return self


# ----------------------------------------------------------------------------------------------------------- s1
class S1ModelConfig(StrictModel):
    """GPT (`Text2SemanticDecoder`) architecture. Defaults are upstream's `configs/s1longer-v2.yaml`."""

    version: ModelVersion = "v2"
    vocab_size: int = Field(1025, gt=1, description="semantic codes + EOS")
    phoneme_vocab_size: int | None = Field(None, description="None = 512 (v1) / 732 (v2)")
    embedding_dim: int = Field(512, gt=0)
    hidden_dim: int = Field(512, gt=0)
    head: int = Field(16, gt=0)
    linear_units: int = Field(2048, gt=0)
    n_layer: int = Field(24, gt=0)
    dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="positional and transformer dropout (upstream's hard-coded 0.1)"
    )
    eos: int = Field(1024, ge=0)
    bert_dim: int = Field(1024, gt=0)

    @model_validator(mode="after")
    def _check(self) -> S1ModelConfig:
        check_architecture(self, "s1")
        if self.embedding_dim % self.head:
            raise ValueError(f"embedding_dim={self.embedding_dim} is not divisible by head={self.head}")
        if self.eos >= self.vocab_size:
            raise ValueError(f"eos={self.eos} must be < vocab_size={self.vocab_size}")
        return self

    @property
    def phone_vocab(self) -> int:
        return self.phoneme_vocab_size if self.phoneme_vocab_size is not None else S1_PHONE_VOCAB[self.version]


class S1DataConfig(StrictModel):
    max_sec: float = Field(54.0, gt=0)
    pad_val: int = 1024


class S1OptimizerConfig(StrictModel):
    lr: float = Field(0.01, gt=0)
    lr_init: float = Field(1e-5, gt=0)
    lr_end: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(2000, ge=0)
    decay_steps: int = Field(40000, ge=0)


class S1TrainConfig(CommonTrainConfig):
    """s1 optimisation: AdamW with warmup + cosine (the shape of `optimizer`), scaled by `lr_scale`."""

    epochs: int = Field(20, gt=0)
    batch_size: int = Field(8, gt=0)
    gradient_clip: float = Field(1.0, ge=0, description="max grad norm; 0 = off")
    lr_scale: float = Field(
        0.02,
        gt=0,
        description="AdamW multiplier on the optimizer section's rates: upstream's ScaledAdam scales each step by "
        "the parameter RMS, so its nominal 0.01 is about 2e-4 for AdamW",
    )
    weight_decay: float = Field(0.01, ge=0)
    stochastic_depth: float = Field(0.0, ge=0.0, lt=1.0, description="probability of skipping each transformer layer")


class S1Config(StrictModel):
    kind: Literal["s1"] = "s1"
    model: S1ModelConfig = S1ModelConfig()
    data: S1DataConfig = S1DataConfig()
    optimizer: S1OptimizerConfig = S1OptimizerConfig()
    train: S1TrainConfig = S1TrainConfig()


AnyConfig = Annotated[S1Config | S2Config, Field(discriminator="kind")]


class _AnyConfig(BaseModel):
    config: AnyConfig


# -------------------------------------------------------------------------------------------------------- I/O
def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("config", "s1", "s2"))
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {short_repr(value)})"
        lines.append(f"  {loc or '<root>'}: {e['msg']}{shown}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> S1Config | S2Config:
    """Validate a plain dict (must carry `kind: s1|s2`) into a typed config."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if data.get("kind") not in ("s1", "s2"):
        raise ConfigError(f"{source}: field 'kind' must be 's1' or 's2' (got {data.get('kind')!r})")
    try:
        return _AnyConfig(config=data).config
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid config\n{_format_errors(err)}") from None


def config_from_json(text: str, source: str = "<json>") -> S1Config | S2Config:
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(f"{source}: config is nested too deeply") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: config is not valid JSON ({err})") from None
    return config_from_dict(data, source)


def load_config(path: str | Path) -> S1Config | S2Config:
    """Read a YAML config file; errors name the file and every bad field."""
    path = Path(path)
    data = read_yaml_file(path, ConfigError, "config file")
    return config_from_dict(data, str(path))


def dump_config(config: S1Config | S2Config) -> str:
    """YAML text of a config (round-trips through `load_config`)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: S1Config | S2Config, path: str | Path) -> None:
    from gsvkit.utils.io import atomic_write_text

    atomic_write_text(Path(path), dump_config(config))


# Upstream's configs/s2v2Pro.json and s2v2ProPlus.json differ from s2.json only in these keys.
_PRO_MODEL = {"p_dropout": 0.0, "gin_channels": 1024}
_S2_OFFICIAL: dict[str, dict[str, Any]] = {
    "v1": {},
    "v2": {},
    "v2Pro": _PRO_MODEL,
    "v2ProPlus": {**_PRO_MODEL, "upsample_initial_channel": 768, "upsample_kernel_sizes": [20, 16, 8, 2, 2]},
    # v3/v4 are built from s2.json (upstream keeps the unused decoder keys); the mel decoder is FlowDecoderConfig.
    "v3": {},
    "v4": {},
}


@overload
def official_config(kind: Literal["s1"], version: str = ...) -> S1Config: ...
@overload
def official_config(kind: Literal["s2"], version: str = ...) -> S2Config: ...
@overload
def official_config(kind: Literal["s1", "s2"], version: str = ...) -> S1Config | S2Config: ...
def official_config(kind: Literal["s1", "s2"], version: str = "v2") -> S1Config | S2Config:
    """The official architecture for `kind` at `version`.

    s2: v1 differs from v2 by table sizes and ref_enc bins, v2Pro/v2ProPlus by the keys in `_S2_OFFICIAL`. s1 of
    the Pro families is v2's GPT.
    """
    if kind == "s2":
        if version not in _S2_OFFICIAL:
            raise ConfigError(f"s2 version {version!r} is not supported (supported: {', '.join(_S2_OFFICIAL)})")
        return S2Config(model=S2ModelConfig(version=version, **_S2_OFFICIAL[version]))
    s1_version = "v1" if version == "v1" else "v2"
    return S1Config(model=S1ModelConfig(version=s1_version))
