"""`gsv demo`: the whole pipeline (synthetic recordings → prepare → train s2 → train s1 → voice → speech),
checked the way a user would: varied tokens, a voice that speaks from the CLI and HTTP with no extra model."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from gsvkit.audio.io import load_audio
from gsvkit.cli import app
from gsvkit.data.manifest import read_manifest
from gsvkit.data.stages import load_tensor
from gsvkit.errors import DataError
from gsvkit.training.demo import MARKER, run_demo

pytestmark = pytest.mark.slow

SHORT, LONG = "A short one.", "This sentence is a good deal longer. It has two parts, and many more words to say."


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    lines: list[str] = []
    # 40 s2 steps in one epoch: the least that takes the random decoder's output off a DC offset.
    r = run_demo(out, minutes=0.15, progress=False, say=lines.append, s2_epochs=1, s2_items_per_epoch=160,
                 s1_epochs=3)
    return r, lines


def _speech_checks(wav: np.ndarray) -> None:
    """Not silence and not a DC offset: a waveform that swings both ways around zero."""
    assert len(wav) > 0 and float(np.abs(wav).max()) > 0.01 and float(wav.std()) > 1e-3
    assert (wav < -1e-3).mean() > 0.05 and (wav > 1e-3).mean() > 0.05
    assert abs(float(wav.mean())) < 0.5 * float(wav.std())


def test_tokens_vary_with_the_audio_and_the_output_says_so(demo):
    r, lines = demo
    assert r.tokens is not None and r.tokens.codes_used >= 16 and r.tokens.top_share < 0.5
    sequences = {tuple(load_tensor(u.feature_path(r.dataset, "semantic"), "codes").tolist())
                 for u in read_manifest(r.dataset)}
    assert len(sequences) == len(read_manifest(r.dataset))  # every clip has its own tokens
    text = r.describe()
    assert "semantic tokens:" in text and f"of {r.tokens.codebook} codes" in text
    assert "val/loss by epoch:  1: " in text and "3: " in text
    assert any(line.startswith("semantic tokens:") for line in lines)
    assert any(line.startswith("val/loss by epoch:") for line in lines)
    assert (r.run / "s2" / "s2.safetensors").is_file() and (r.run / "s1" / "s1.safetensors").is_file()
    assert str(r.run) in text and "pretrained" in text
    _speech_checks(load_audio(r.wav))


def test_the_voice_speaks_through_the_cli_with_no_extra_model(demo, tmp_path):
    r, _ = demo
    assert (r.voice / "prompt.safetensors").is_file()
    seconds = {}
    for name, text in (("short", SHORT), ("long", LONG)):
        out = tmp_path / f"{name}.wav"
        result = CliRunner().invoke(app, ["synth", "--voice", str(r.voice), text, "-o", str(out), "--seed", "0"])
        assert result.exit_code == 0, result.output
        wav = load_audio(out)
        _speech_checks(wav)
        seconds[name] = len(wav)
    assert seconds["long"] > 1.5 * seconds["short"], seconds  # longer text, longer audio
    scored = CliRunner().invoke(app, ["eval", "voice", str(r.voice), "--data", str(r.dataset), "--limit", "1",
                                      "--metric", "duration_ratio", "--json"])
    assert scored.exit_code == 0, scored.output
    assert '"failed": 0' in scored.output


def test_the_voice_speaks_through_http(demo):
    from gsvkit.inference.pipeline import TTS
    from gsvkit.serve.http import create_app
    from serving import Server

    r, _ = demo
    with Server(create_app(TTS(r.voice))) as url:
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        got = httpx.get(f"{url}/tts", params={"text": SHORT, "text_lang": "en", "media_type": "raw", "seed": 0},
                        timeout=120)
    assert got.status_code == 200, got.text
    _speech_checks(np.frombuffer(got.content, dtype="<i2").astype(np.float32) / 32767)


def test_rerun_needs_overwrite_and_overwrite_only_replaces_a_demo_folder(demo, tmp_path):
    r, _ = demo
    with pytest.raises(DataError, match="--overwrite"):
        run_demo(r.out, progress=False, say=lambda _: None)
    assert (r.out / MARKER).is_file() and r.voice.is_dir()  # refused: nothing was touched
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a folder written by gsv demo"):
        run_demo(other, progress=False, say=lambda _: None, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_the_folder_an_earlier_demo_wrote(tmp_path):
    from gsvkit.training.demo import _fresh_folder

    out = tmp_path / "runs" / "demo"
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by gsv demo")
    (out / "demo.wav").write_bytes(b"old")
    _fresh_folder(out, overwrite=True)
    assert not out.exists()  # run_demo then writes it afresh
