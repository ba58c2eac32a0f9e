"""Export of a trained stage as an fp16 inference file (gsvkit.checkpoint format) with its provenance."""

from __future__ import annotations

from pathlib import Path

import torch

from gsvkit.config import S1Config, S2Config
from gsvkit.training.callbacks import read_checkpoint


def export_inference(
    module,
    cfg: S1Config | S2Config,
    path: Path,
    record: dict,
    data_hash: str,
    checkpoint: Path | None = None,
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
    return save_checkpoint(path, weights, cfg, info, dtype=torch.float16)
