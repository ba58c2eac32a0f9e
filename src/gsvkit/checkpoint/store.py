"""Reading, writing, converting and building models from checkpoint files (the logic behind `gsvkit.checkpoint`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gsvkit.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from gsvkit.config import S1Config, S2Config


KINDS = ("s1", "s2", "s2d")
KIND_NAMES = {
    "s1": "GPT (s1)",
    "s2": "SoVITS generator (s2)",
    "s2d": "SoVITS discriminator (s2d)",
    "sv": "speaker-verification (ERes2NetV2, v2Pro/v2ProPlus)",
    "vocoder": "vocoder (v3 BigVGAN / v4 HiFi-GAN)",
}


@dataclass
class Checkpoint:
    """A loaded model file, whatever its origin."""

    kind: str  # "s1" | "s2" | "s2d"
    version: str  # "v1" | "v2"
    config: S1Config | S2Config
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any]
    source_format: str  # "gsvkit", "s2-export", "s2-export-header", "s2-pretrained-G", "s1-export", ...
    path: Path | None = None

    @property
    def num_params(self) -> int:
        """Elements over all tensors (parameters and buffers)."""
        return sum(t.numel() for t in self.state_dict.values())


@dataclass
class CheckpointHeader:
    """What a file is, without reading its tensor data (`read_header`)."""

    path: Path
    kind: str
    version: str
    source_format: str
    config: S1Config | S2Config
    info: dict[str, Any]
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # name -> (dtype, shape)
    format_version: str | None = None  # ours only

    @property
    def num_params(self) -> int:
        total = 0
        for _, shape in self.tensors.values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total

    @property
    def dtypes(self) -> dict[str, int]:
        """Tensor count per dtype, e.g. {"float16": 776}."""
        return dict(Counter(dtype for dtype, _ in self.tensors.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what `gsv info --json` prints)."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "version": self.version,
            "source_format": self.source_format,
            "format_version": self.format_version,
            "num_params": self.num_params,
            "num_tensors": len(self.tensors),
            "dtypes": self.dtypes,
            "config": self.config.model_dump(mode="json") if self.config is not None else None,
            "info": self.info,
        }


# ------------------------------------------------------------------------------------------------------ save
def save_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    config: S1Config | S2Config | Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = True,
    kind: str | None = None,
) -> Path:
    """Write `state_dict` as a gsvkit `.safetensors` checkpoint; returns the path.

    `config` is the model's typed config (or a dict that validates into one); `info` is any JSON-able training
    info (epoch, step, metrics, dataset hash, ...). `dtype=torch.float16` stores floating tensors in half
    precision. `kind` defaults to the config's kind, or "s2d" when every key is a discriminator key. The write is
    atomic (temporary file, fsync, rename); with `overwrite=False` an existing file is an error.
    """
    from gsvkit.checkpoint import format as fmt
    from gsvkit.checkpoint.upstream import D_PREFIX, jsonable
    from gsvkit.config import ConfigError, config_from_dict
    from gsvkit.utils.io import atomic_path

    path = Path(path)
    if isinstance(config, Mapping):
        try:
            config = config_from_dict(dict(config), source=f"config for {path}")
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
    if kind is None:
        is_d = config.kind == "s2" and state_dict and all(k.startswith(D_PREFIX) for k in state_dict)
        kind = "s2d" if is_d else config.kind
    if kind not in KINDS or (kind == "s1") != (config.kind == "s1"):
        raise CheckpointError(f"{path}: kind {kind!r} does not fit a {config.kind} config")
    tensors = fmt.prepare_tensors(state_dict, dtype)
    if not tensors:
        raise CheckpointError(f"{path}: refusing to save an empty state dict")
    metadata = {
        "format": fmt.FORMAT_NAME,
        "format_version": fmt.FORMAT_VERSION,
        "kind": kind,
        "version": config.model.version,
        "config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
        "info": json.dumps(jsonable(dict(info or {})), sort_keys=True),
        "content_sha256": fmt.content_digest(tensors),
        "created_by": f"gsvkit {_gsvkit_version()}",
    }
    try:
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        with atomic_path(path, overwrite=overwrite, size_hint=size) as tmp:
            fmt.write_file(tmp, tensors, metadata)
    except FileExistsError:
        raise CheckpointError(f"{path} already exists; choose another name or allow overwriting") from None
    return path


def _gsvkit_version() -> str:
    from gsvkit import __version__

    return __version__


# ------------------------------------------------------------------------------------------------------ load
def _check_file(path: Path) -> str:
    """Return the container type of `path` ("safetensors" | "torch-zip") or raise a clear error."""
    from gsvkit.checkpoint.unpickler import sniff

    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); the write was interrupted or the download failed")
    kind, head = sniff(path)
    if kind in ("safetensors", "torch-zip"):
        return kind
    if kind == "torch-legacy":
        raise CheckpointError(
            f"{path}: uses PyTorch's legacy (pre-1.6) file format, which cannot be read without running pickled "
            "code; re-save it with a recent torch (torch.save) first"
        )
    if path.suffix == ".safetensors":
        return "safetensors"  # damaged from the first bytes on: let the header reader say how
    if path.suffix in (".pth", ".ckpt", ".pt") and b"PK\x03\x04".startswith(head[:4]):
        raise CheckpointError(f"{path}: truncated: only {path.stat().st_size} bytes of a zip archive")
    raise CheckpointError(
        f"{path}: not a checkpoint gsvkit can read (expected a gsvkit .safetensors file or an official GPT-SoVITS "
        ".pth/.ckpt file)"
    )


def _ours_meta(path: Path, raw: Any) -> tuple[str, str, S1Config | S2Config, dict[str, Any]]:
    from gsvkit.checkpoint import format as fmt
    from gsvkit.config import ConfigError, config_from_json

    meta = raw.metadata
    if meta.get("format") != fmt.FORMAT_NAME:
        raise CheckpointError(
            f"{path}: a safetensors file without gsvkit metadata (format={meta.get('format')!r}); "
            "gsvkit only reads the .safetensors files it wrote"
        )
    fv = meta.get("format_version", "")
    if not fv.isdigit() or int(fv) > int(fmt.FORMAT_VERSION):
        raise CheckpointError(f"{path}: format version {fv!r} is newer than this gsvkit reads; upgrade gsvkit")
    kind, version = meta.get("kind"), meta.get("version")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: corrupted metadata: kind {kind!r}")
    try:
        config = config_from_json(meta.get("config", ""), source=f"{path} (stored config)")
    except ConfigError as err:
        raise CheckpointError(f"{path}: corrupted metadata: {err}") from None
    if (kind == "s1") != (config.kind == "s1") or config.model.version != version:
        raise CheckpointError(f"{path}: corrupted metadata: kind/version {kind}/{version} disagree with the config")
    try:
        info = json.loads(meta.get("info", "{}"))
    except RecursionError:
        raise CheckpointError(f"{path}: corrupted metadata: info is nested too deeply") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: corrupted metadata: info is not JSON ({err})") from None
    return kind, version, config, info if isinstance(info, dict) else {"info": info}


def load_checkpoint(path: str | Path, *, verify: bool = True, base: str | Path | None = None) -> Checkpoint:
    """Load a gsvkit `.safetensors` file or any supported official GPT-SoVITS file.

    `verify=True` checks our content checksum (official zip entries are always CRC-checked). s1 keys come back
    without upstream's Lightning "model." prefix, so they match `gsvkit.models.s1.Text2SemanticDecoder`.
    A v3/v4 LoRA file holds adapters only: `base` (the full v3/v4 model it was trained on) is then required, and
    the result is the merged full model.
    """
    from gsvkit.checkpoint import format as fmt

    path = Path(path)
    if _check_file(path) == "safetensors":
        raw = fmt.read_raw_header(path)
        kind, version, config, info = _ours_meta(path, raw)
        if verify:
            fmt.verify(path, raw)
        else:
            fmt.check_complete(path, raw)
        return Checkpoint(kind, version, config, fmt.read_tensors(path), info, "gsvkit", path)

    from gsvkit.checkpoint.unpickler import read_torch_file
    from gsvkit.checkpoint.upstream import interpret

    # Look before reading tensor bytes, so refused versions and wrong files fail fast and cheaply.
    first = interpret(read_torch_file(path, lazy=True), path)
    if "lora_rank" in first.info and base is None:
        raise CheckpointError(
            f"{path} is a {first.version} LoRA file (adapters only): give the base model it was trained on, "
            f"upstream's pretrained_models/{first.info['lora_base']} (--base PATH)"
        )
    imp = interpret(read_torch_file(path), path)
    if "lora_rank" in imp.info:
        return _merged_lora(path, imp, Path(base))  # type: ignore[arg-type]
    return Checkpoint(imp.kind, imp.version, imp.config, imp.state_dict, imp.info, imp.source_format, path)


def _merged_lora(path: Path, imp: Any, base: Path) -> Checkpoint:
    from gsvkit.models.s2.flow import flow_config_from_state_dict
    from gsvkit.models.s2.lora import merge_lora

    full = load_checkpoint(base)
    if full.kind != "s2" or full.version != imp.version or "lora_rank" in full.info:
        raise CheckpointError(
            f"{base} is a {full.kind} {full.version} file, but {path} needs a full {imp.version} SoVITS base model "
            f"(upstream's pretrained_models/{imp.info['lora_base']})"
        )
    try:
        merged = merge_lora(full.state_dict, imp.state_dict, int(imp.info["lora_rank"]))
    except CheckpointError as err:
        raise CheckpointError(f"{path} on {base}: {err}") from None
    # The base file's architecture (a LoRA file's config names only upstream's configurable sizes).
    config = full.config.model_copy(deep=True)
    config.model.flow = flow_config_from_state_dict(merged)
    info = {**imp.info, "lora_base_file": str(base), "source_format": "s2-lora-merged"}
    return Checkpoint("s2", imp.version, config, merged, info, "s2-lora-merged", path)


def read_header(path: str | Path) -> CheckpointHeader:
    """Describe a checkpoint (kind, version, config, info, tensor names/shapes) without reading tensor data."""
    from gsvkit.checkpoint import format as fmt

    path = Path(path)
    if _check_file(path) == "safetensors":
        raw = fmt.read_raw_header(path)
        kind, version, config, info = _ours_meta(path, raw)
        fmt.check_complete(path, raw)
        tensors = {n: (_DTYPE_NAMES.get(e.dtype, e.dtype), e.shape) for n, e in raw.tensors.items()}
        return CheckpointHeader(path, kind, version, "gsvkit", config, info, tensors, raw.metadata["format_version"])

    from gsvkit.checkpoint.unpickler import read_torch_file
    from gsvkit.checkpoint.upstream import interpret

    imp = interpret(read_torch_file(path, lazy=True), path)
    tensors = {n: (str(r.dtype).removeprefix("torch."), r.shape) for n, r in imp.state_dict.items()}
    return CheckpointHeader(path, imp.kind, imp.version, imp.source_format, imp.config, imp.info, tensors)


_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    base: str | Path | None = None,
) -> CheckpointHeader:
    """Import any supported file and save it in gsvkit's format (`gsv convert`); returns the new file's header.

    A v3/v4 LoRA file needs `base`; the saved file is the merged full model.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(
            f"{dst}: the output name must end in .safetensors (e.g. {dst.with_suffix('.safetensors')})"
        )
    if dst.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"{dst}: output would replace the input file; choose another output name")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst} already exists; pass --overwrite to replace it")
    if dst.is_dir():
        raise CheckpointError(f"{dst} is a directory; give the output file name (e.g. {dst / 'model.safetensors'})")
    ckpt = load_checkpoint(src, base=base)
    if ckpt.kind == "sv":
        raise CheckpointError(
            f"{src}: the speaker-verification model is used as upstream ships it (--sv-model {src}); "
            "there is nothing to convert"
        )
    if ckpt.kind == "vocoder":
        raise CheckpointError(
            f"{src}: the {ckpt.version} vocoder is used as upstream ships it (--vocoder {src}); there is nothing to "
            "convert"
        )
    info = dict(ckpt.info)
    info.setdefault("source_file", str(src))
    info.setdefault("source_format", ckpt.source_format)
    save_checkpoint(dst, ckpt.state_dict, ckpt.config, info, dtype=dtype, overwrite=overwrite, kind=ckpt.kind)
    return read_header(dst)


# ---------------------------------------------------------------------------------------------------- models
def _read(path: str | Path, kind: str) -> tuple[Path, Checkpoint]:
    """`load_checkpoint(path)`, which must hold a `kind` model."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    _expect_kind(ckpt, kind, path)
    return path, ckpt


def _expect_kind(ckpt: Checkpoint, kind: str, path: Path) -> None:
    if ckpt.kind != kind:
        raise CheckpointError(
            f"{path} holds a {KIND_NAMES[ckpt.kind]} model, but a {KIND_NAMES[kind]} model is needed here"
        )


def _load_into(model: Any, state_dict: Mapping[str, Any], path: Path, optional: tuple[str, ...] = ()) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.startswith(optional)]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:4])})")
        raise CheckpointError(f"{path}: weights do not fit the model built from its config: {'; '.join(parts)}")
    wrong = [
        f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensors have the wrong shape (e.g. {'; '.join(wrong[:3])})")
    model.load_state_dict(dict(state_dict), strict=False)


def load_s2(path: str | Path, device: str = "cpu", base: str | Path | None = None) -> Any:
    """An eval-mode SoVITS from any supported s2 file: `SynthesizerTrn` (enc_q None when the file has none), or
    `SynthesizerTrnV3` for v3/v4 (a LoRA file is merged into `base`)."""
    from gsvkit.models.s2 import SynthesizerTrn

    path = Path(path)
    ckpt = load_checkpoint(path, base=base)
    _expect_kind(ckpt, "s2", path)
    if ckpt.config.model.is_flow:
        from gsvkit.models.s2.flow import SynthesizerTrnV3

        try:
            flow = SynthesizerTrnV3.from_upstream_state_dict(ckpt.state_dict, ckpt.version, ckpt.config.model)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
        return flow.to(device).eval()
    model = SynthesizerTrn(ckpt.config.model)
    _load_into(model, ckpt.state_dict, path, optional=("enc_q.",))
    if not any(k.startswith("enc_q.") for k in ckpt.state_dict):
        model.enc_q = None  # an export: no posterior encoder, as `from_upstream_state_dict` (training adds one)
    return model.to(device).eval()


def load_s1(path: str | Path, device: str = "cpu") -> Any:
    """An eval-mode `gsvkit.models.s1.Text2SemanticDecoder` from any supported s1 file."""
    from gsvkit.models.s1 import Text2SemanticDecoder

    path, ckpt = _read(path, "s1")
    model = Text2SemanticDecoder(ckpt.config.model)
    _load_into(model, ckpt.state_dict, path)
    return model.to(device).eval()


def load_speaker_encoder(path: str | Path, device: str = "cpu") -> Any:
    """An eval-mode `gsvkit.models.sv.SpeakerEncoder` from upstream's `sv/pretrained_eres2netv2w24s4ep4.ckpt`.

    That file is a plain `torch.save` state dict; it is read with the restricted unpickler like every official file.
    """
    from gsvkit.models.sv import SpeakerEncoder

    path, ckpt = _read(path, "sv")
    try:
        model = SpeakerEncoder.from_upstream_state_dict(ckpt.state_dict)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return model.to(device).eval()


def load_vocoder_file(path: str | Path, device: str = "cpu") -> Any:
    """An eval-mode vocoder from upstream's files: BigVGAN's `bigvgan_generator.pt` (v3) or `vocoder.pth` (v4)."""
    from gsvkit.models.vocoders import load_vocoder

    path, ckpt = _read(path, "vocoder")
    try:
        return load_vocoder(ckpt.state_dict, ckpt.version).to(device).eval()
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None


def load_s2d(path: str | Path, device: str = "cpu") -> Any:
    """An eval-mode `gsvkit.models.s2.MultiPeriodDiscriminator` from a discriminator file."""
    from gsvkit.models.s2 import MultiPeriodDiscriminator

    path, ckpt = _read(path, "s2d")
    model = MultiPeriodDiscriminator(ckpt.config.model)
    _load_into(model, ckpt.state_dict, path)
    return model.to(device).eval()
