"""Speaker similarity: cosine of GE2E speaker embeddings (resemblyzer's pretrained encoder).

The encoder's weights ship inside the `resemblyzer` wheel, so nothing is downloaded. Each utterance is
resampled to 16 kHz, volume-normalised and stripped of long silences (resemblyzer's own preprocessing),
then embedded as a unit-length 256-d vector; similarity is the cosine of two embeddings (about 0.85 for two
sentences of one synthetic voice, about 0.5 for two different voices; see benchmarks/README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from gsvkit.errors import AudioError, GsvError
from gsvkit.eval.waveform import AudioInput, as_waveform

SAMPLE_RATE = 16000
MIN_SPEECH_S = 0.3  # shorter than this after silence trimming, an embedding is noise

INSTALL_HINT = "install the evaluation extra: `pip install 'gsvkit[eval]' && pip install --no-deps resemblyzer`"


class SpeakerEncoder:
    """Embeds utterances as unit-length speaker vectors (`[256]` float32)."""

    def __init__(self, device: str = "cpu"):
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as err:
            raise GsvError(f"speaker similarity needs resemblyzer ({err}); {INSTALL_HINT}") from None
        self.device = device
        self._encoder = VoiceEncoder(device, verbose=False)

    def embed(self, audio: AudioInput, sr: int | None = None) -> np.ndarray:
        """Embedding of one utterance (a path, or a waveform at `sr` Hz). -> [256], unit norm."""
        from resemblyzer import preprocess_wav

        name = audio if not isinstance(audio, np.ndarray) else "waveform"
        wav = as_waveform(audio, SAMPLE_RATE, sr)
        if float(np.abs(wav).max()) < 1e-4:  # resemblyzer's volume normalisation divides by the level
            raise AudioError(f"{name}: the audio is silent; a speaker embedding needs speech")
        wav = preprocess_wav(wav)  # already 16 kHz: normalises volume and trims long silences only
        if wav.size < MIN_SPEECH_S * SAMPLE_RATE:
            raise AudioError(f"{name}: less than {MIN_SPEECH_S} s of speech; a speaker embedding needs speech")
        return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)

    def embed_speaker(self, audios: Sequence[AudioInput], sr: int | None = None) -> np.ndarray:
        """One embedding for a speaker from several utterances: the normalised mean. -> [256]."""
        if not audios:
            raise AudioError("no audio given for the target speaker")
        return normalize(np.mean([self.embed(a, sr) for a in audios], axis=0))


@functools.lru_cache(maxsize=2)
def get_encoder(device: str = "cpu") -> SpeakerEncoder:
    """A shared encoder per device (loading it takes about a second)."""
    return SpeakerEncoder(device)


def normalize(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings, in [-1, 1]."""
    return float(np.dot(normalize(a), normalize(b)))


def speaker_similarity(a: AudioInput, b: AudioInput, sr: int | None = None, device: str = "cpu") -> float:
    """Speaker similarity of two utterances (paths or waveforms at `sr` Hz), in [-1, 1]; higher = same voice."""
    encoder = get_encoder(device)
    return cosine(encoder.embed(a, sr), encoder.embed(b, sr))
