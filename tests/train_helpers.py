"""Shared helpers of the training tests: a tiny synthetic dataset in the prepared-dataset format."""

from __future__ import annotations

from pathlib import Path

import torch

from gsvkit.config import load_config

TINY_S2 = Path(__file__).parents[1] / "configs" / "tiny" / "s2.yaml"
TINY_S1 = Path(__file__).parents[1] / "configs" / "tiny" / "s1.yaml"


def toy_dataset(tmp: Path, n_utts: int = 8, n_speakers: int = 1, name: str = "ds") -> Path:
    from gsvkit.training.toy_data import make_toy_dataset

    return make_toy_dataset(tmp / name, load_config(TINY_S2), n_utts=n_utts, n_speakers=n_speakers,
                            seconds=(0.6, 1.0))


def flip_tensor_bytes(path, n: int = 16) -> None:
    """Flip `n` bytes inside the largest tensor of a saved training checkpoint (the zip stays readable)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    big = max(state.values(), key=lambda t: t.numel())
    data = bytearray(path.read_bytes())
    at = bytes(data).find(big.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    assert at > 0
    mid = at + big.numel() * big.element_size() // 2
    for i in range(n):
        data[mid + i] ^= 0xFF
    path.write_bytes(bytes(data))
