"""What a synthesis returns: the whole result with its seed and timings, or a stream of audio chunks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SynthesisResult:
    sample_rate: int
    audio: np.ndarray  # float32 [S]
    seed: int
    fragments: list[str]
    tokens_per_fragment: list[int]
    timings: dict[str, float] = field(default_factory=dict)  # seconds: prepare, s1, s2
    watermark: str = ""  # the watermark model id, or "off"
    audit_id: str = ""  # the id of this synthesis's audit line


class AudioStream:
    """Iterator of float32 audio chunks; `sample_rate` and `seed` are known before the first chunk."""

    def __init__(self, sample_rate: int, seed: int, chunks: Iterator[np.ndarray]) -> None:
        self.sample_rate = sample_rate
        self.seed = seed
        self._chunks = chunks

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._chunks

    def __next__(self) -> np.ndarray:
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
