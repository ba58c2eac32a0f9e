"""Speech recognition for clips that have no transcript (optional: faster-whisper with a local model).

`gsv prepare --asr-model DIR` loads a CTranslate2 Whisper model from DIR (for example a `faster-whisper-*`
download); nothing is fetched from the network. The transcripts go to the dataset's editable `transcripts.list`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from gsvkit.errors import CheckpointError, DataError

# frontend language -> Whisper language code ("auto" modes let Whisper detect it)
_WHISPER_LANG = {"zh": "zh", "all_zh": "zh", "en": "en", "ja": "ja", "all_ja": "ja", "ko": "ko", "all_ko": "ko",
                 "yue": "yue", "all_yue": "yue"}  # fmt: skip


class Transcriber(Protocol):
    def __call__(self, wav16k: np.ndarray, language: str) -> str:
        """Text spoken in a 16 kHz mono clip."""
        ...


class FasterWhisperTranscriber:
    """Whisper through faster-whisper, from a local model directory (model.bin + config.json + tokenizer)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", compute_type: str = "default") -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise CheckpointError(
                f"{model_dir}: not a faster-whisper model directory (no model.bin); convert a Whisper model with "
                "ct2-transformers-converter or download a faster-whisper model and pass its folder"
            )
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise DataError("--asr-model needs the faster-whisper package: pip install faster-whisper") from None
        device = "cuda" if device.startswith("cuda") else "cpu"
        if compute_type == "default":
            compute_type = "float16" if device == "cuda" else "int8"
        self.model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, local_files_only=True)
        self.path = model_dir

    def __call__(self, wav16k: np.ndarray, language: str) -> str:
        segments, _info = self.model.transcribe(
            np.asarray(wav16k, dtype=np.float32), language=_WHISPER_LANG.get(language), beam_size=5
        )
        return " ".join(s.text.strip() for s in segments).strip()


def missing_transcripts_error(count: int, example: str) -> DataError:
    return DataError(
        f"{count} clip(s) have no transcript (for example {example}) and no --asr-model was given; pass "
        "--transcripts FILE, put a .txt/.lab file next to each recording, or give a faster-whisper model "
        "directory with --asr-model"
    )
