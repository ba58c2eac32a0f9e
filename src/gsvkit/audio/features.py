"""HuBERT content features (chinese-hubert-base) from a local transformers directory.

Upstream feeds the raw 16 kHz waveform straight into `HubertModel` (it bypasses the feature extractor's
zero-mean/unit-variance normalisation) and keeps `last_hidden_state`, transposed to channels-first: 768 channels
at 50 frames per second (one frame per 320 samples). This module does the same. The model's first convolution is
followed by a GroupNorm over time, so the overall scale of the input hardly matters; upstream's preparation
nevertheless scales clips by 1145.14 before extraction (`PREPARE_INPUT_SCALE`), and `gsv prepare` follows it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gsvkit.errors import CheckpointError

if TYPE_CHECKING:
    import torch

HUBERT_SR = 16000
HUBERT_HOP = 320  # samples per feature frame at 16 kHz (product of the conv strides)
PREPARE_INPUT_SCALE = 1145.14  # upstream 2-get-hubert-wav32k.py's scale of the HuBERT input


def check_model_dir(path: str | Path, model_types: tuple[str, ...], what: str) -> dict:
    """Validate a transformers model directory and return its config.json; CheckpointError when unusable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: {what} directory not found; pass the local directory that holds it")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a {what} directory (config.json + weights), got a file")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json; this is not a transformers {what} directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_file}: unreadable config ({err})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in model_types:
        raise CheckpointError(
            f"{path}: config.json describes a {model_type!r} model, not {what} ({'/'.join(model_types)}); "
            "check the path"
        )
    weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
    if not weights:
        raise CheckpointError(f"{path}: no weight file (model.safetensors or pytorch_model.bin) in the directory")
    return config


class HubertFeaturizer:
    """`HubertFeaturizer(path)(wav16k) -> [1, hidden, T50]` float32 on the CPU.

    `path` is a local directory in the transformers format (config.json + weights), e.g. chinese-hubert-base;
    nothing is downloaded. `half=True` runs in float16 on CUDA (upstream's default on GPUs).
    """

    def __init__(self, path: str | Path, device: str = "cpu", half: bool = False) -> None:
        import torch
        from transformers import HubertModel

        self.path = Path(path)
        config = check_model_dir(self.path, ("hubert",), "HuBERT")
        self.hidden_size = int(config.get("hidden_size", 768))
        try:
            model = HubertModel.from_pretrained(str(self.path), local_files_only=True)
        except Exception as err:  # transformers raises OSError/ValueError/RuntimeError for bad weight files
            raise CheckpointError(f"{self.path}: cannot load the HuBERT weights ({err})") from None
        self.device = torch.device(device)
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        # transformers declares `to` with functools.wraps(nn.Module.to), which its checker reads as unbound
        self.model = model.to(self.device, self.dtype).eval()  # type: ignore[arg-type]

    def __call__(self, wav16k: np.ndarray) -> torch.Tensor:
        import torch

        wav = torch.as_tensor(np.asarray(wav16k, dtype=np.float32)).reshape(1, -1)  # [1, S]
        if wav.shape[1] < 400:  # the conv stack needs at least one receptive field (25 ms)
            wav = torch.nn.functional.pad(wav, (0, 400 - wav.shape[1]))
        with torch.inference_mode():
            out = self.model(wav.to(self.device, self.dtype)).last_hidden_state  # [1, T, C]
        return out.transpose(1, 2).float().cpu().contiguous()  # [1, C, T]

    def n_frames(self, n_samples: int) -> int:
        """Feature frames HuBERT gives for `n_samples` at 16 kHz."""
        n = max(n_samples, 400)
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride, strict=True):
            n = (n - kernel) // stride + 1
        return n
