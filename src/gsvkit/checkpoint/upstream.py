"""Make sense of official GPT-SoVITS weight files once they are safely unpickled.

What upstream writes (all `torch.save` zip files):

| source format       | top level (written by)                                                           |
|---------------------|----------------------------------------------------------------------------------|
| `s2-export`         | `{"weight": G minus enc_q, fp16, "config": HParams, "info": "8epoch_224iteration"}` |
|                     | (`process_ckpt.savee`)                                                           |
| `s2-export-header`  | the same, first two bytes `00`/`01` instead of `PK` (`my_save2`)                 |
| `s2-pretrained-G`   | `{"weight": G state dict incl. enc_q}` (pretrained `s2G*.pth`)                   |
| `s2-pretrained-D`   | `{"weight": {"discriminators.*": ...}}` (pretrained `s2D*.pth`)                  |
| `s2-train-G` / `-D` | `{"model", "iteration", "optimizer", "learning_rate"}` (`utils.save_checkpoint`) |
| `s1-export`         | `{"weight": {"model.<k>": fp16}, "config": dict, "info": "GPT-e15"}`             |
| `s1-lightning-ckpt` | `{"state_dict": {"model.<k>": ...}, "optimizer_states", "loops", ...}`           |
| `<kind>-state-dict` | a bare state dict (`torch.save(model.state_dict())`)                             |
| `sv-state-dict`     | v2Pro's speaker-verification model, `sv/pretrained_eres2netv2w24s4ep4.ckpt`      |

Model version comes from the content first (s2: `sv_emb`/`ge_to512`/`prelu` make v2Pro, and v2ProPlus when the
decoder is the wider one, 768 channels into `dec.conv_pre`; otherwise `enc_p.text_embedding.weight` has 322 rows in
v1, 732 in v2; s1 `ar_text_embedding.word_embeddings.weight` has 512 rows in v1, 732 in v2), then the header tag
(`05` v2Pro, `06` v2ProPlus), then the config. v3, v4, v5 and LoRA files are recognised (header tag `02`-`04`,
`07`/`08`, config version, or their extra modules: `cfm` for v3/v4, `lora_*` for LoRA) and refused with a message
naming them. (Upstream also knows its pretrained `s2Gv2Pro*.pth` by the md5 of their first 8 KB; the content rule
above already tells them apart, so no hash list is kept.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gsvkit.checkpoint.unpickler import TensorRef, TorchFile, plain
from gsvkit.config import (
    N_SYMBOLS,
    PRO_VERSIONS,
    S1_PHONE_VOCAB,
    ConfigError,
    S1Config,
    S2Config,
    config_from_dict,
    official_config,
)
from gsvkit.errors import CheckpointError
from gsvkit.models.s2.discriminators import PERIODS

SUPPORTED_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4", "v3-LoRA", "v4-LoRA")
NEWER_VERSIONS = ("v5dev", "v5turbo")
# Where upstream keeps the base model a v3/v4 LoRA file is merged into (pretrained_models/...).
LORA_BASE_FILES = {"v3": "s2Gv3.pth", "v4": "gsv-v4-pretrained/s2Gv4.pth"}

S1_PREFIXES = (
    "ar_text_embedding.",
    "ar_audio_embedding.",
    "ar_text_position.",
    "ar_audio_position.",
    "bert_proj.",
    "h.",
    "ar_predict_layer.",
)
S2_PREFIXES = ("enc_p.", "dec.", "flow.", "ref_enc.", "ssl_proj.", "quantizer.", "enc_q.")
# Modules only newer SoVITS generations have; enough to tell their weights apart from v1/v2 ones.
V2PRO_PREFIXES = ("sv_emb.", "ge_to512.", "prelu.")
V3_PREFIXES = ("cfm.", "bridge.", "wns1.", "linear_mel.")
# Vocoders: BigVGAN (v3, `{"generator": ...}`) and the v4 HiFi-GAN (`vocoder.pth`, a bare state dict).
VOCODER_PREFIXES = ("conv_pre.", "ups.", "resblocks.", "conv_post.", "activation_post.")
D_PREFIX = "discriminators."
# ERes2NetV2, the speaker-verification model of v2Pro/v2ProPlus (the x-vector head seg_*/pool included).
SV_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "layer3_ds.", "fuse34.", "seg_", "pool.")

S1_TEXT_EMBEDDING = "ar_text_embedding.word_embeddings.weight"
S2_TEXT_EMBEDDING = "enc_p.text_embedding.weight"

_S2_MODEL_FIELDS = (
    "inter_channels",
    "hidden_channels",
    "filter_channels",
    "n_heads",
    "n_layers",
    "kernel_size",
    "p_dropout",
    "resblock",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "upsample_rates",
    "upsample_initial_channel",
    "upsample_kernel_sizes",
    "gin_channels",
    "use_spectral_norm",
    "semantic_frame_rate",
    "freeze_quantizer",
)
_S2_DATA_FIELDS = (
    "sampling_rate",
    "filter_length",
    "hop_length",
    "win_length",
    "n_mel_channels",
    "mel_fmin",
    "mel_fmax",
)
_S2_TRAIN_FIELDS = (
    "seed",
    "epochs",
    "learning_rate",
    "betas",
    "eps",
    "batch_size",
    "lr_decay",
    "c_mel",
    "c_kl",
    "text_low_lr_rate",
)
# No "dropout": upstream's model ignores that config value (0) and hard-codes 0.1, which is our default.
_S1_MODEL_FIELDS = {
    "vocab_size": "vocab_size",
    "embedding_dim": "embedding_dim",
    "hidden_dim": "hidden_dim",
    "head": "head",
    "linear_units": "linear_units",
    "n_layer": "n_layer",
    "EOS": "eos",
}
_S1_SECTIONS = {
    "data": ("max_sec", "pad_val"),
    "optimizer": ("lr", "lr_init", "lr_end", "warmup_steps", "decay_steps"),
    "train": ("seed", "epochs", "batch_size", "gradient_clip"),
}


@dataclass
class Imported:
    """An official file, understood: its tensors (or `TensorRef`s when read lazily) and what they are."""

    kind: str  # "s1" | "s2" | "s2d" | "sv" | "vocoder"
    version: str  # "v1" | "v2" | "v2Pro" | "v2ProPlus" | "v3" | "v4"
    config: Any  # S1Config | S2Config; SpeakerEncoderConfig for "sv"
    state_dict: dict[str, Any]
    info: dict[str, Any]
    source_format: str


def refuse_version(path: Path, version: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is a GPT-SoVITS {version} model; gsvkit supports v1, v2, v2Pro, v2ProPlus, v3 and v4 for now "
        "(use a model of those families, or upstream GPT-SoVITS for this one)"
    )


def interpret(tf: TorchFile, path: Path) -> Imported:
    """Classify an unpickled official file and map it to our kind, version, config and state dict."""
    obj = tf.obj
    if tf.header_version is not None and tf.header_version not in SUPPORTED_VERSIONS:
        raise refuse_version(path, tf.header_version)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a GPT-SoVITS checkpoint (its top level is a {type(obj).__name__})")

    container, weights = _find_weights(obj, path)
    sv_like = "fuse34.local_att.0.weight" in weights and all(k.startswith(SV_PREFIXES) for k in weights)
    if container == "bare" and sv_like:
        return _speaker_encoder(weights, path, tf.header_version)
    if container in ("bare", "generator") and all(k.startswith(VOCODER_PREFIXES) for k in weights):
        return _vocoder(weights, path, container)
    upstream_cfg = _upstream_config(obj, container)
    kind = _kind_of(weights, path)
    if kind == "s1":
        weights = {k.removeprefix("model."): v for k, v in weights.items()}
    flow = None
    if kind == "s2":
        _refuse_newer_s2(path, upstream_cfg)
        flow = _flow_family(path, obj, weights, upstream_cfg, tf.header_version)
    elif (declared := _declared_version(upstream_cfg)) in NEWER_VERSIONS:
        raise refuse_version(path, declared)
    if flow is not None:
        return _flow_s2(path, obj, container, weights, upstream_cfg, tf.header_version, *flow)

    source_format = _source_format(kind, container, obj, weights, tf.header_version)
    if kind == "s1":
        version, phone_rows = _s1_version(weights, upstream_cfg)
        config: S1Config | S2Config = _s1_config(upstream_cfg, version, phone_rows, path)
    else:
        version, n_symbols = _s2_version(weights, upstream_cfg, tf.header_version, kind)
        config = _s2_config(upstream_cfg, version, n_symbols, path, weights)
    info = _info(obj, container, path, source_format, upstream_cfg, tf.header_version)
    return Imported(kind, version, config, dict(weights), info, source_format)


def _speaker_encoder(weights: Mapping[str, Any], path: Path, header: str | None) -> Imported:
    from gsvkit.models.sv import SpeakerEncoder

    try:
        cfg = SpeakerEncoder.config_from_state_dict(weights)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    info = {
        "source_file": str(path),
        "source_format": "sv-state-dict",
        "model": "ERes2NetV2 speaker verification, forward3 embedding",
        "embedding_dim": cfg.dim,
        "used_by": list(PRO_VERSIONS),
    }
    if header is not None:
        info["header_version"] = header
    return Imported("sv", "v2Pro", cfg, dict(weights), info, "sv-state-dict")


# ------------------------------------------------------------------------------------------------- structure
def _is_tensor(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, TensorRef))


def _find_weights(obj: Mapping, path: Path) -> tuple[str, Mapping[str, Any]]:
    if isinstance(obj.get("state_dict"), Mapping):
        container, weights = "lightning", obj["state_dict"]
    elif isinstance(obj.get("generator"), Mapping) and len(obj) <= 2:
        container, weights = "generator", obj["generator"]  # NVIDIA's bigvgan_generator.pt
    elif isinstance(obj.get("weight"), Mapping):
        container, weights = "weight", obj["weight"]
    elif isinstance(obj.get("model"), Mapping) and "iteration" in obj:
        container, weights = "train", obj["model"]
    elif obj and all(isinstance(k, str) and _is_tensor(v) for k, v in obj.items()):
        container, weights = "bare", obj
    else:
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(
            f"{path}: not a GPT-SoVITS checkpoint: no 'weight', 'state_dict' or 'model' entry (top-level keys: {keys})"
        )
    if not weights:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    for k, v in weights.items():
        if not isinstance(k, str) or not _is_tensor(v):
            raise CheckpointError(f"{path}: weight entry {k!r} is a {type(v).__name__}, not a tensor")
    return container, weights


def _upstream_config(obj: Mapping, container: str) -> dict[str, Any]:
    cfg = obj.get("config")
    if container == "lightning":
        hp = obj.get("hyper_parameters")
        if isinstance(hp, Mapping):
            cfg = hp.get("config", hp)
    return plain(cfg) if isinstance(cfg, Mapping) else {}


def _kind_of(weights: Mapping[str, Any], path: Path) -> str:
    names = list(weights)
    if all(n.startswith(D_PREFIX) for n in names):
        return "s2d"
    if all(n.removeprefix("model.").startswith(S1_PREFIXES) for n in names):
        return "s1"
    s2_like = S2_PREFIXES + V2PRO_PREFIXES + V3_PREFIXES
    if all(n.startswith(s2_like) for n in names):
        return "s2"
    odd = [n for n in names if not n.removeprefix("model.").startswith(s2_like + S1_PREFIXES + (D_PREFIX,))]
    sample = ", ".join(odd[:5]) or ", ".join(names[:5])
    raise CheckpointError(f"{path}: weights are neither GPT (s1) nor SoVITS (s2) weights (unrecognised: {sample})")


def _declared_version(cfg: Mapping[str, Any]) -> str | None:
    model = cfg.get("model")
    for v in (cfg.get("version"), model.get("version") if isinstance(model, Mapping) else None):
        if isinstance(v, str) and v:
            return v
    return None


def _refuse_newer_s2(path: Path, cfg: Mapping[str, Any]) -> None:
    declared = _declared_version(cfg)
    if declared in NEWER_VERSIONS:
        raise refuse_version(path, declared)


def _flow_family(
    path: Path, obj: Mapping, weights: Mapping[str, Any], cfg: Mapping[str, Any], header: str | None
) -> tuple[str, int | None] | None:
    """(version v3|v4, lora_rank or None) for a flow-matching SoVITS file; None for the v1/v2 families.

    Content first (cfm/bridge/wns1 keys, lora_A/lora_B keys), then the header tag (`02` v3, `03`/`04` v3/v4 LoRA),
    then the config's version, then upstream's pretrained info tag. v3 and v4 share every key, so a file with
    none of these is v3, as upstream's own size rule decides.
    """
    names = list(weights)
    has_flow = any(n.startswith(V3_PREFIXES) for n in names)
    is_lora = "lora_rank" in obj or any(".lora_A." in n or ".lora_B." in n for n in names)
    tagged = header in ("v3", "v3-LoRA", "v4-LoRA")
    if not (has_flow or is_lora or tagged):
        return None
    if not has_flow:
        raise CheckpointError(
            f"{path}: tagged or marked as a GPT-SoVITS {header or 'v3/v4 LoRA'} file, but it holds no flow-decoder "
            "weights (cfm.*); the file is damaged or mislabelled"
        )
    declared = _declared_version(cfg)
    if header in ("v3", "v3-LoRA", "v4-LoRA"):
        version = header[:2]
    elif declared in ("v3", "v4"):
        version = declared
    else:
        version = "v4" if obj.get("info") == "pretrained_s2G_v4" else "v3"
    if header in ("v3-LoRA", "v4-LoRA") or is_lora:
        rank = obj.get("lora_rank")
        if not isinstance(rank, int):
            a = next((weights[n] for n in names if ".lora_A." in n), None)
            rank = int(a.shape[0]) if a is not None else None
        if not isinstance(rank, int) or rank < 1:
            raise CheckpointError(f"{path}: a v3/v4 LoRA file without a usable lora_rank ({obj.get('lora_rank')!r})")
        return version, rank
    return version, None


def _flow_s2(
    path: Path,
    obj: Mapping,
    container: str,
    weights: Mapping[str, Any],
    cfg: Mapping[str, Any],
    header: str | None,
    version: str,
    lora_rank: int | None,
) -> Imported:
    from gsvkit.models.s2.flow import flow_config_from_state_dict

    config = _s2_config(cfg, version, None, path, weights)
    if lora_rank is None:
        config.model.flow = flow_config_from_state_dict(weights)
        source_format = "s2-export-header" if header is not None else "s2-pretrained-G"
    else:
        source_format = "s2-lora"
    info = _info(obj, container, path, source_format, dict(cfg), header)
    if lora_rank is not None:
        info["lora_rank"] = lora_rank
        info["lora_base"] = LORA_BASE_FILES[version]
    return Imported("s2", version, config, dict(weights), info, source_format)


def _vocoder(weights: Mapping[str, Any], path: Path, container: str) -> Imported:
    version = "v3" if any(k.startswith("activation_post.") for k in weights) else "v4"
    source_format = "bigvgan-generator" if container == "generator" else "vocoder-state-dict"
    info = {
        "source_file": str(path),
        "source_format": source_format,
        "model": "BigVGAN-v2 24 kHz 100-band x256" if version == "v3" else "v4 vocoder (HiFi-GAN x480, 48 kHz)",
        "used_by": [version],
    }
    return Imported("vocoder", version, None, dict(weights), info, source_format)


def _source_format(kind: str, container: str, obj: Mapping, weights: Mapping, header: str | None) -> str:
    if container == "bare":
        return f"{kind}-state-dict"
    if kind == "s1":
        return "s1-lightning-ckpt" if container == "lightning" else "s1-export"
    if kind == "s2d":
        return "s2-train-D" if container == "train" else "s2-pretrained-D"
    if container == "train":
        return "s2-train-G"
    if header is not None:
        return "s2-export-header"
    has_enc_q = any(n.startswith("enc_q.") for n in weights)
    return "s2-export" if "config" in obj and not has_enc_q else "s2-pretrained-G"


# --------------------------------------------------------------------------------------------------- version
def _s2_version(
    weights: Mapping[str, Any], cfg: Mapping[str, Any], header: str | None, kind: str
) -> tuple[str, int | None]:
    if any(n.startswith(V2PRO_PREFIXES) for n in weights):
        return _pro_version(weights, cfg, header), None
    if kind == "s2d" and any(n.startswith(f"{D_PREFIX}{len(PERIODS) + 1}.") for n in weights):
        return "v2Pro", None  # the Pro discriminator has two more periods (v2Pro and v2ProPlus share it)
    emb = weights.get(S2_TEXT_EMBEDDING)
    if emb is not None and header not in PRO_VERSIONS:
        rows = int(emb.shape[0])
        version = "v1" if rows == N_SYMBOLS["v1"] else "v2"  # upstream's rule: 322 rows is v1, anything else v2
        return version, (rows if rows != N_SYMBOLS[version] else None)
    if header in SUPPORTED_VERSIONS:
        return header, None
    declared = _declared_version(cfg)
    return (declared if declared in SUPPORTED_VERSIONS else "v2"), None


def _pro_version(weights: Mapping[str, Any], cfg: Mapping[str, Any], header: str | None) -> str:
    # v2ProPlus differs from v2Pro only by a wider decoder: upsample_initial_channel 768 and a 20-tap first up-conv.
    # Non-official sizes fall through to the header and the config.
    conv_pre = weights.get("dec.conv_pre.weight")
    width = int(conv_pre.shape[0]) if conv_pre is not None else None
    for version in PRO_VERSIONS:
        if width == official_config("s2", version).model.upsample_initial_channel:
            return version
    if header in PRO_VERSIONS:
        return header
    declared = _declared_version(cfg)
    return declared if declared in PRO_VERSIONS else "v2Pro"


def _s1_version(weights: Mapping[str, Any], cfg: Mapping[str, Any]) -> tuple[str, int | None]:
    emb = weights.get(S1_TEXT_EMBEDDING)
    rows = int(emb.shape[0]) if emb is not None else None
    if rows is None:
        model = cfg.get("model")
        if not isinstance(model, Mapping):
            model = {}
        pv = model.get("phoneme_vocab_size")
        rows = int(pv) if isinstance(pv, int) else None
    if rows is None:
        return "v2", None
    version = "v2" if rows >= S1_PHONE_VOCAB["v2"] else "v1"
    return version, rows


# ---------------------------------------------------------------------------------------------------- config
def _section(cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    s = cfg.get(name)
    return s if isinstance(s, Mapping) else {}


def _pick(section: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    # None means "unset" upstream, except mel_fmax where None is a real value (Nyquist).
    return {f: section[f] for f in fields if f in section and (section[f] is not None or f == "mel_fmax")}


def _s2_config(
    cfg: Mapping[str, Any], version: str, n_symbols: int | None, path: Path, weights: Mapping[str, Any]
) -> S2Config:
    # The official sizes of the version fill what the file does not say (pretrained G files carry no config).
    official = official_config("s2", version).model.model_dump()
    model = {**official, **_pick(_section(cfg, "model"), _S2_MODEL_FIELDS)}
    data = _pick(_section(cfg, "data"), _S2_DATA_FIELDS)
    train = _pick(_section(cfg, "train"), _S2_TRAIN_FIELDS)
    model["version"] = version
    if n_symbols is not None:
        model["n_symbols"] = n_symbols
    sv_emb = weights.get("sv_emb.weight")
    if sv_emb is not None and len(sv_emb.shape) == 2:  # [gin, sv_dim]
        model["sv_dim"] = int(sv_emb.shape[1])
    if isinstance(data.get("filter_length"), int):
        model["spec_channels"] = data["filter_length"] // 2 + 1
    return _validated({"kind": "s2", "model": model, "data": data, "train": train}, path)  # type: ignore[return-value]


def _s1_config(cfg: Mapping[str, Any], version: str, phone_rows: int | None, path: Path) -> S1Config:
    src = _section(cfg, "model")
    model = {ours: src[theirs] for theirs, ours in _S1_MODEL_FIELDS.items() if src.get(theirs) is not None}
    model["version"] = version
    if phone_rows is not None and phone_rows != S1_PHONE_VOCAB[version]:
        model["phoneme_vocab_size"] = phone_rows
    out: dict[str, Any] = {"kind": "s1", "model": model}
    for name, fields in _S1_SECTIONS.items():
        out[name] = _pick(_section(cfg, name), fields)
    return _validated(out, path)  # type: ignore[return-value]


def _validated(data: dict[str, Any], path: Path) -> S1Config | S2Config:
    # Keep only the fields our config sections define, so upstream-only or renamed fields never block an import
    # (the full upstream dict stays in info["upstream_config"]).
    defaults = S1Config() if data["kind"] == "s1" else S2Config()
    for name, section in data.items():
        if isinstance(section, dict):
            fields = type(getattr(defaults, name)).model_fields
            data[name] = {k: v for k, v in section.items() if k in fields}
    try:
        return config_from_dict(data, source=f"{path} (config mapped from the upstream file)")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


# ------------------------------------------------------------------------------------------------------ info
def jsonable(obj: Any) -> Any:
    """A JSON-safe copy: tensors become short descriptions, unknown objects their repr."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else f"<tensor {list(obj.shape)} {obj.dtype}>"
    if isinstance(obj, TensorRef):
        return f"<tensor {list(obj.shape)} {obj.dtype}>"
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _info(
    obj: Mapping, container: str, path: Path, source_format: str, cfg: dict[str, Any], header: str | None
) -> dict[str, Any]:
    info: dict[str, Any] = {"source_file": str(path), "source_format": source_format}
    text = obj.get("info")
    if isinstance(text, str):
        info["upstream_info"] = text
        if m := re.fullmatch(r"(\d+)epoch_(\d+)iteration", text):
            info["epoch"], info["step"] = int(m.group(1)), int(m.group(2))
        elif m := re.fullmatch(r"GPT-e(\d+)", text):
            info["epoch"] = int(m.group(1))
    if container == "lightning":
        for theirs, ours in (("epoch", "epoch"), ("global_step", "step"), ("pytorch-lightning_version", "lightning")):
            if isinstance(obj.get(theirs), (int, str)):
                info[ours] = obj[theirs]
    if container == "train":
        if isinstance(obj.get("iteration"), int):
            info["epoch"] = obj["iteration"]  # utils.save_checkpoint stores the epoch under "iteration"
        if isinstance(obj.get("learning_rate"), (int, float)):
            info["learning_rate"] = obj["learning_rate"]
    if header is not None:
        info["header_version"] = header
    if cfg:
        info["upstream_config"] = jsonable(cfg)
    return info
