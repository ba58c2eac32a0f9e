"""Export of a trained stage as an fp16 inference file (gsvkit.checkpoint format) with its provenance, and the
reading of gsvkit's own full-state training checkpoints by `gsv info`, `gsv convert` and `gsv export checkpoint`.

A training checkpoint carries the run's typed config (`gsvkit.config`); files written before it did are read with
the `config.yaml` saved beside the run's `checkpoints/` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gsvkit.config import S1Config, S2Config, config_from_dict, load_config
from gsvkit.errors import CheckpointError
from gsvkit.training.callbacks import CHECKSUM_KEY, read_checkpoint


def export_inference(
    module,
    cfg: S1Config | S2Config,
    path: Path,
    record: dict,
    data_hash: str | None,
    checkpoint: Path | None = None,
    *,
    dtype: torch.dtype | None = torch.float16,
    overwrite: bool = True,
) -> Path:
    """Write `module`'s inference weights (EMA when on; s2 without enc_q) as fp16 safetensors.

    With `checkpoint`, the weights are first restored from that full-state file (the best epoch), so the export
    is exactly that epoch's model whatever the module holds now. `info` carries epoch, step, validation metrics,
    dataset hash and the monitored metric.
    """
    from gsvkit.checkpoint import save_checkpoint

    if checkpoint is not None:
        state = read_checkpoint(Path(checkpoint))["state_dict"]
        module.load_state_dict(state, strict=True)
    weights = module.inference_state_dict()
    info = {
        "epoch": record.get("epoch"),
        "step": record.get("step"),
        "val_metrics": record.get("metrics", {}),
        "monitor_value": record.get("score"),
        "dataset_hash": data_hash,
        "source_checkpoint": record.get("name"),
        "trained_by": "gsv train",
    }
    return save_checkpoint(path, weights, cfg, info, dtype=dtype, overwrite=overwrite)


# ------------------------------------------------------------------------------------ own training checkpoints
def is_training_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a full-state checkpoint written by `gsv train` (memory-mapped: nothing is copied)."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".ckpt":
        return False
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an official file, a damaged one: the general reader says what it is
        return False
    return isinstance(ckpt, dict) and "gsvkit" in ckpt and "state_dict" in ckpt


def _config_of(path: Path, ckpt: dict) -> S1Config | S2Config:
    stored = ckpt.get("gsvkit", {}).get("config")
    if stored:
        return config_from_dict(stored, source=f"{path} (stored config)")
    beside = path.parent.parent / "config.yaml"
    if beside.is_file():
        return load_config(beside)
    raise CheckpointError(f"{path}: this training checkpoint holds no config and there is no {beside}; "
                          "copy the run's config.yaml there")


def _own_record(ckpt: dict) -> dict:
    # The checkpoint policy appends a file's own record before writing it: the last one is this file's.
    records = ckpt.get("callbacks", {}).get("CheckpointPolicy", {}).get("records") or []
    if records:
        return dict(records[-1])
    return {"epoch": int(ckpt.get("epoch", 0)) + 1, "step": ckpt.get("global_step"), "metrics": {}}


def training_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """What `gsv info` shows for a training checkpoint; CheckpointError when it is damaged (checksum checked)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    cfg = _config_of(path, ckpt)
    record = _own_record(ckpt)
    n_params = sum(v.numel() for v in ckpt["state_dict"].values() if torch.is_tensor(v))
    return {
        "file": str(path),
        "kind": f"{cfg.kind} training checkpoint (gsv train)",
        "version": cfg.model.version,
        "epoch": record.get("epoch"),
        "step": record.get("step"),
        "interrupted": bool(record.get("interrupted")),
        "val_metrics": record.get("metrics", {}),
        "dataset_hash": ckpt["gsvkit"].get("dataset_hash"),
        "parameters": n_params,
        "checksum": "sha256 matches" if ckpt.get(CHECKSUM_KEY) else "none (written before checksums)",
        "config": cfg.model_dump(mode="json"),
    }


def export_checkpoint(
    path: str | Path, out: str | Path, *, dtype: torch.dtype | None = torch.float16, overwrite: bool = False
) -> Path:
    """Write the inference file of any kept epoch: `runs/EXP/s2/checkpoints/epoch=0004-….ckpt` → `out`.

    The result is what training exports for its best epoch (same weights, config and provenance), so it loads
    with `gsvkit.checkpoint.load_s1`/`load_s2` and pairs with the other stage in `gsv voice create`.
    """
    from gsvkit.training.s1_module import S1Module
    from gsvkit.training.s2_module import S2Module

    path = Path(path)
    ckpt = read_checkpoint(path)
    cfg = _config_of(path, ckpt)
    module = S1Module(cfg) if isinstance(cfg, S1Config) else S2Module(cfg)
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not match its config ({str(err).splitlines()[0]})") from None
    return export_inference(module, cfg, Path(out), _own_record(ckpt), ckpt["gsvkit"].get("dataset_hash"),
                            dtype=dtype, overwrite=overwrite)
