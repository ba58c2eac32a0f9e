"""Speaker similarity as an s2 validation metric: `val/speaker_sim`, higher is better.

Mel L1 says how close the decoded spectrum is, not whether the voice is the right one; a checkpoint can lower
one while drifting on the other. This scores each decoded validation utterance against the ground-truth clip
of the same utterance with `gsvkit.eval.similarity` (GE2E embeddings of resemblyzer's encoder, audio resampled
to 16 kHz with soxr) and reports the mean cosine.

Scoring rules, so that the value is comparable between epochs:
- the first `max_items` validation utterances are scored, the same ones every time;
- a ground-truth clip without enough speech for an embedding is left out (it is the data, not the model);
- a decoded clip without enough speech counts as 0.0, the floor of GE2E cosines (they are non-negative).

The encoder runs on the CPU: it is small, and keeps the GPU's memory for the model being trained.
"""

from __future__ import annotations

import numpy as np

from gsvkit.errors import AudioError, DataError, GsvError
from gsvkit.training.config import SpeakerSimilarityConfig

SILENT_SCORE = 0.0


def require_resemblyzer() -> None:
    """Fail before training starts when the speaker encoder cannot be imported."""
    from gsvkit.eval.similarity import INSTALL_HINT

    try:
        import resemblyzer  # noqa: F401
    except ImportError as err:
        raise GsvError(
            f"train.speaker_similarity.enabled needs resemblyzer, which is not importable ({err}); "
            f"{INSTALL_HINT}, or set train.speaker_similarity.enabled: false"
        ) from None


class SpeakerSimilarityMetric:
    """Collects per-utterance similarities over one validation; `mean()` is the logged value."""

    def __init__(self, cfg: SpeakerSimilarityConfig, sample_rate: int, device: str = "cpu") -> None:
        require_resemblyzer()
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.device = device
        self._truth: dict[str, np.ndarray | None] = {}  # ground-truth embedding per utterance id (None: unusable)
        self.scores: list[float] = []

    def active(self, epoch: int) -> bool:
        """Whether the validation after `epoch` completed epochs (1-based) is scored."""
        return self.cfg.enabled and epoch % self.cfg.every_n_epochs == 0

    def wants(self, index: int) -> bool:
        """Whether the `index`-th validation utterance (0-based, in loader order) is scored."""
        return index < self.cfg.max_items

    def reset(self) -> None:
        self.scores = []

    def _embed(self, wav: np.ndarray) -> np.ndarray | None:
        from gsvkit.eval.similarity import get_encoder

        try:
            return get_encoder(self.device).embed(wav, self.sample_rate)
        except AudioError:
            return None

    def add(self, utt_id: str, decoded: np.ndarray, truth: np.ndarray) -> float | None:
        """Score one utterance: `decoded` and `truth` are waveforms [S] at the s2 sample rate."""
        from gsvkit.eval.similarity import cosine

        if utt_id not in self._truth:  # the ground truth does not change between epochs
            self._truth[utt_id] = self._embed(np.asarray(truth, dtype=np.float32))
        target = self._truth[utt_id]
        if target is None:
            return None
        emb = self._embed(np.asarray(decoded, dtype=np.float32))
        score = SILENT_SCORE if emb is None else cosine(emb, target)
        self.scores.append(score)
        return score

    def mean(self) -> float:
        """Mean similarity of this validation, in [-1, 1]; DataError when no ground truth could be embedded."""
        if not self.scores:
            bad = sorted(k for k, v in self._truth.items() if v is None)
            raise DataError(
                f"speaker similarity: none of the scored validation clips ({', '.join(bad) or 'none'}) has the "
                "0.3 s of speech an embedding needs; use longer validation clips or set "
                "train.speaker_similarity.enabled: false"
            )
        return float(np.mean(self.scores))
