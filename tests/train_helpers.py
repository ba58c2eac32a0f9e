"""Shared helpers of the training tests: a tiny synthetic dataset in the prepared-dataset format."""

from __future__ import annotations

from pathlib import Path

from gsvkit.config import load_config

TINY_S2 = Path(__file__).parents[1] / "configs" / "tiny" / "s2.yaml"
TINY_S1 = Path(__file__).parents[1] / "configs" / "tiny" / "s1.yaml"


def toy_dataset(tmp: Path, n_utts: int = 8, n_speakers: int = 1, name: str = "ds") -> Path:
    from gsvkit.training.toy_data import make_toy_dataset

    return make_toy_dataset(tmp / name, load_config(TINY_S2), n_utts=n_utts, n_speakers=n_speakers,
                            seconds=(0.6, 1.0))
