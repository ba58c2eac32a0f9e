"""`gsv synth` and `gsv voice create|list` through the real command line (typer runner), tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from gsvkit.cli import app
from tiny import build_models, speechlike

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_hubert):
    root = tmp_path_factory.mktemp("cli")
    s1, s2 = build_models(root / "run" / "export")
    hubert = tiny_hubert
    ref = root / "ref.flac"
    sf.write(ref, speechlike(5.0, sr=22050), 22050)
    voice = root / "voices" / "bob"
    r = runner.invoke(
        app,
        [
            "voice", "create", str(voice), "--from", str(root / "run"), "--ref", str(ref),
            "--ref-text", "Hello, this is Bob speaking.", "--ref-lang", "en", "--consent", "test voice, synthetic",
            "--hubert", str(hubert), "--speaker", "Bob", "--language", "en", "--language", "zh",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return {"root": root, "s1": s1, "s2": s2, "hubert": hubert, "ref": ref, "voice": voice}


def synth(args, input=None):
    return runner.invoke(app, ["synth", *args, "--max-new-tokens", "30"], input=input)


def test_voice_create_and_list(setup):
    assert (setup["voice"] / "voice.json").is_file() and (setup["voice"] / "reference.flac").is_file()
    r = runner.invoke(app, ["voice", "list", str(setup["root"] / "voices"), "--json"])
    assert r.exit_code == 0, r.output
    [v] = json.loads(r.output)
    assert v["name"] == "bob" and v["languages"] == ["en", "zh"] and v["speaker"] == "Bob"
    r = runner.invoke(app, ["voice", "list", str(setup["root"] / "voices")])
    assert r.exit_code == 0 and "bob" in r.output


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_synth_formats(setup, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    r = synth(
        ["--voice", str(setup["voice"]), "Hello there, how are you?", "-o", str(out), "--lang", "en", "--seed", "1"]
    )
    assert r.exit_code == 0, r.output
    wav, sr = sf.read(out)
    assert sr == 16000 and len(wav) > 16000 * 0.3  # tokens * 128 samples + one 0.3 s gap
    assert "tokens" in r.output and "seed 1" in r.output


def test_synth_expected_length_and_seed(setup, tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    for out in (a, b):
        r = synth(["--voice", str(setup["voice"]), "Same seed, same audio.", "-o", str(out), "-l", "en", "--seed", "7"])
        assert r.exit_code == 0, r.output
    wa, wb = sf.read(a, dtype="int16")[0], sf.read(b, dtype="int16")[0]
    np.testing.assert_array_equal(wa, wb)
    n_tokens = int(r.output.split(" tokens")[0].split()[-1])
    n_frags = int(r.output.split(" fragment")[0].split()[-1])
    assert n_frags == 2  # "Same seed," + "same audio." (cut5)
    assert len(wa) == n_tokens * 128 + n_frags * int(16000 * 0.3)


def test_synth_text_from_file_and_stdin(setup, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("Reading this from a file.", encoding="utf-8")
    out = tmp_path / "f.wav"
    r = synth(["--voice", str(setup["voice"]), "-f", str(text), "-o", str(out), "-l", "en"])
    assert r.exit_code == 0, r.output
    assert sf.info(out).frames > 0
    out2 = tmp_path / "s.wav"
    r = synth(["--voice", str(setup["voice"]), "-", "-o", str(out2), "-l", "en"], input="From standard input.")
    assert r.exit_code == 0, r.output
    assert sf.info(out2).frames > 0


def test_synth_explicit_models_and_reference(setup, tmp_path):
    out = tmp_path / "x.wav"
    r = synth(
        ["--s1", str(setup["s1"]), "--s2", str(setup["s2"]), "--hubert", str(setup["hubert"]),
         "--ref", str(setup["ref"]), "--ref-text", "Hello, this is Bob speaking.", "--ref-lang", "en",
         "--consent", "synthetic test clip, no person", "Explicit files work too.", "-o", str(out), "-l", "en"]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sf.info(out).frames > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["", "-l", "en"], "empty"),
        (["Hello.", "-l", "xx"], "not supported"),
        (["Hello.", "-l", "en", "--top-k", "0"], "top_k"),
        (["Hello.", "-l", "en", "--ref", "/nonexistent.wav", "--ref-text", "hi", "--ref-lang", "en",
          "--consent", "a test declaration"], "not found"),
        (["Hello.", "-l", "en", "--ref", "/nonexistent.wav", "--ref-text", "hi", "--ref-lang", "en"],
         "needs a consent declaration"),
        (["Hello.", "-o", "out.mp3"], ".wav, .flac or .ogg"),
        (["こんにちは。", "-l", "ja"], "made for en, zh"),
    ],
)
def test_synth_errors_are_one_line(setup, tmp_path, args, message):
    r = synth(["--voice", str(setup["voice"]), *args])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output


def test_synth_needs_models():
    r = synth(["Hello.", "-l", "en"])
    assert r.exit_code == 2 and "--voice" in r.output


@pytest.mark.parametrize(
    ("option", "field"), [(["--top-k", "0"], "top_k"), (["--speed", "9"], "speed"), (["--split", "cut9"], "split")]
)
def test_synth_bad_parameter_fails_before_models_load(setup, tmp_path, monkeypatch, option, field):
    from gsvkit.inference import pipeline

    loads = []
    monkeypatch.setattr(pipeline.TTS, "__init__", lambda self, *a, **k: loads.append(k))
    r = runner.invoke(app, ["synth", "Hi.", "--voice", str(setup["voice"]), "-o", str(tmp_path / "o.wav"), *option])
    assert r.exit_code == 2 and f"{field}:" in r.output
    assert loads == []


def test_synth_passes_only_given_parameters(setup, tmp_path, monkeypatch):
    from gsvkit.inference import pipeline

    seen = {}

    def fake(self, *args, **kwargs):
        seen.update(kwargs)
        raise pipeline.GsvError("stop here")

    monkeypatch.setattr(pipeline.TTS, "synthesize_result", fake)
    r = runner.invoke(app, ["synth", "Hi.", "--voice", str(setup["voice"]), "-o", str(tmp_path / "o.wav"),
                            "--top-k", "5", "--no-split-bucket"])  # fmt: skip
    assert r.exit_code == 2 and "stop here" in r.output
    assert seen["top_k"] == 5 and seen["split_bucket"] is False
    assert "temperature" not in seen and "speed" not in seen  # not given: the model's default decides
