"""Broken audio and transcripts in `gsv prepare` and for references: reported, never silently accepted."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import hostile
from gsvkit.audio.io import read_audio
from gsvkit.cli import app
from gsvkit.errors import AudioError
from gsvkit.inference.reference import load_reference_16k

runner = CliRunner()


def _prepare(tmp_path, *inputs):
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", *map(str, inputs), "-o", str(out), "-q"])
    report = out / "report.json"
    dropped = json.loads(report.read_text())["dropped"] if report.exists() else []
    return result, " | ".join(f"{d['where']}: {d['reason']}" for d in dropped)


def test_one_hertz_wav_is_not_audio(tmp_path):
    f = hostile.wav(tmp_path / "tiny.wav", sr=1, samples=8)  # "8.0 s" by its header
    with pytest.raises(AudioError, match=r"tiny\.wav: sample rate 1 Hz is below MIN_SAMPLE_RATE=8000"):
        read_audio(f)
    with pytest.raises(AudioError, match="MIN_SAMPLE_RATE"):
        load_reference_16k(f)


def test_truncated_wav_is_reported(tmp_path):
    f = hostile.wav(tmp_path / "cut.wav", sr=32000, samples=96000, truncate_to=1 / 3)
    with pytest.raises(AudioError, match=r"cut\.wav: truncated: only 33% of the audio"):
        read_audio(f)
    whole = hostile.wav(tmp_path / "whole.wav", sr=32000, samples=96000)
    assert read_audio(whole)[0].shape == (96000,)


def test_prepare_drops_truncated_and_one_hertz_clips_with_reasons(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    hostile.wav(folder / "cut.wav", sr=32000, samples=96000, truncate_to=1 / 3)
    hostile.wav(folder / "tiny.wav", sr=1, samples=8)
    (folder / "t.list").write_text("cut.wav|s|EN|Hello there.\ntiny.wav|s|EN|Hello there.\n")
    result, dropped = _prepare(tmp_path, folder, folder / "t.list")
    assert result.exit_code == 1
    assert "cut.wav" in dropped and "truncated" in dropped
    assert "tiny.wav" in dropped and "MIN_SAMPLE_RATE" in dropped


def test_prepare_drops_an_implausibly_long_transcript(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    hostile.wav(folder / "a.wav", sr=32000, samples=96000)  # 3 s
    (folder / "t.list").write_text("a.wav|s|EN|" + " ".join(["word"] * 1_000) + "\n")
    result, dropped = _prepare(tmp_path, folder, folder / "t.list")
    assert result.exit_code == 1
    assert "4,999 characters for 3.0 s of audio" in dropped and "MAX_CHARS_PER_SECOND" in dropped


def test_empty_list_exits_1_with_a_message(tmp_path):
    empty = tmp_path / "empty.list"
    empty.write_text("")
    result, _ = _prepare(tmp_path, empty)
    assert result.exit_code == 1
    assert "empty transcript file" in result.output and "no usable clip" in result.output


def test_list_naming_audio_outside_the_input_folders_is_refused(tmp_path):
    secret = tmp_path / "private"
    secret.mkdir()
    hostile.wav(secret / "voice.wav", sr=32000, samples=96000)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    listing = uploads / "t.list"
    listing.write_text(f"{secret / 'voice.wav'}|s|EN|Hello there, how are you.\n../private/voice.wav|s|EN|Hi.\n")
    result, dropped = _prepare(tmp_path, listing)
    assert result.exit_code == 1
    assert dropped.count("lies outside the input folders") == 2
    assert not (tmp_path / "out" / "clips").exists() or not list((tmp_path / "out" / "clips").iterdir())


def test_absolute_upstream_paths_match_audio_given_as_input(tmp_path):
    # upstream writes absolute paths of its own machine; giving the audio folder as input still matches by name
    audio = tmp_path / "slicer_opt"
    audio.mkdir()
    hostile.wav(audio / "voice.wav", sr=32000, samples=96000)
    listing = tmp_path / "lists" / "t.list"
    listing.parent.mkdir()
    listing.write_text("/home/someone/GPT-SoVITS/output/slicer_opt/voice.wav|s|EN|Hello there, how are you.\n")
    result, dropped = _prepare(tmp_path, audio, listing)
    assert "outside" not in dropped and "not found" not in dropped, dropped
    assert result.exit_code == 0, result.output
