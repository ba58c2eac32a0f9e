"""With a populated models folder ($GSVKIT_MODELS), prepare/train/voice create/synth need no model flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from gsvkit.cli import app
from gsvkit.models.official import default_path, resolve
from test_inference_pipeline import build_hubert, build_models, speechlike

runner = CliRunner()
HUBERT = "chinese-hubert-base"
S2G = "gsv-v2final-pretrained/s2G2333k.pth"
S2D = "gsv-v2final-pretrained/s2D2333k.pth"
S1 = "gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"


def fake_folder(root: Path) -> Path:
    """A models folder with every official v2 file present (placeholder bytes: nothing here loads them)."""
    for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin"):
        (root / HUBERT / name).parent.mkdir(parents=True, exist_ok=True)
        (root / HUBERT / name).write_text("{}")
    for name in ("config.json", "pytorch_model.bin", "tokenizer.json"):
        (root / "chinese-roberta-wwm-ext-large" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "chinese-roberta-wwm-ext-large" / name).write_text("{}")
    for name in (S2G, S2D, S1):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return root


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = fake_folder(tmp_path / "models")
    monkeypatch.setenv("GSVKIT_MODELS", str(root))
    return root


def test_default_paths_follow_the_env_and_the_layout(tmp_path, models, monkeypatch):
    assert default_path("hubert") == models / HUBERT
    assert default_path("s2G") == models / S2G and default_path("s1") == models / S1
    assert default_path("s2G", "v2Pro") is None  # not fetched
    assert resolve("mine", "hubert") == Path("mine")  # an explicit path wins
    assert resolve(None, "hubert", recorded=tmp_path) == tmp_path  # then a voice's own, if it exists
    assert resolve(None, "hubert", recorded=tmp_path / "gone") == models / HUBERT
    (models / HUBERT / "pytorch_model.bin").unlink()
    assert default_path("hubert") is None  # an incomplete download is not a model
    monkeypatch.delenv("GSVKIT_MODELS")
    monkeypatch.chdir(tmp_path)  # ./models is the default folder
    assert default_path("s2G") == Path("models") / S2G


def test_prepare_finds_hubert_s2_and_bert(tmp_path, models, monkeypatch):
    seen = {}

    def fake_prepare(cfg, progress=True):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr("gsvkit.data.prepare.prepare", fake_prepare)
    runner.invoke(app, ["prepare", str(tmp_path), "--out", str(tmp_path / "ds")])
    cfg = seen["cfg"]
    assert (cfg.hubert, cfg.s2, cfg.bert) == (str(models / HUBERT), str(models / S2G),
                                              str(models / "chinese-roberta-wwm-ext-large"))  # fmt: skip
    runner.invoke(app, ["prepare", str(tmp_path), "--out", str(tmp_path / "ds"), "--hubert", "elsewhere"])
    assert seen["cfg"].hubert == "elsewhere" and seen["cfg"].s2 == str(models / S2G)


def test_train_uses_the_official_pretrained_files(tmp_path, models, monkeypatch):
    calls = []
    monkeypatch.setattr("gsvkit.training.fit.train_s2", lambda *a, **k: calls.append(("s2", a)))
    monkeypatch.setattr("gsvkit.training.fit.train_s1", lambda *a, **k: calls.append(("s1", a)))
    monkeypatch.setattr("gsvkit.training.fit.train_all", lambda *a, **k: calls.append(("all", a)))
    ds, out = str(tmp_path / "ds"), str(tmp_path / "run")
    r = runner.invoke(app, ["train", "s2", ds, "--out", out])
    assert r.exit_code == 0, r.output
    assert calls[-1][1][3] == models / S2G and "from the models folder" in r.output
    runner.invoke(app, ["train", "s1", ds, "--out", out])
    assert calls[-1][1][3] == models / S1
    runner.invoke(app, ["train", "all", ds, "--out", out])
    args = calls[-1][1]
    assert (args[4], args[6]) == (models / S2G, models / S1)
    # a config of its own (e.g. a tiny architecture) or an explicit file: no default is forced on it
    runner.invoke(app, ["train", "s2", ds, "--out", out, "-c", "configs/tiny/s2.yaml"])
    assert calls[-1][1][3] is None
    runner.invoke(app, ["train", "s1", ds, "--out", out, "--pretrained", "mine.ckpt"])
    assert calls[-1][1][3] == Path("mine.ckpt")


def test_train_without_the_files_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GSVKIT_MODELS", str(tmp_path / "empty"))
    monkeypatch.setattr("gsvkit.training.fit.train_s2", lambda *a, **k: None)
    r = runner.invoke(app, ["train", "s2", str(tmp_path), "--out", str(tmp_path / "run")])
    assert "random weights" in r.output and "gsv models fetch v2" in r.output


def test_synth_and_voice_create_find_hubert(tmp_path, monkeypatch):
    """Real tiny models: a voice made without --hubert stores its prompt tokens; synth reads a new reference."""
    folder = tmp_path / "models"
    build_hubert(folder / HUBERT)  # config.json + model.safetensors, as transformers saves it
    monkeypatch.setenv("GSVKIT_MODELS", str(folder))
    s1, s2 = build_models(tmp_path / "w")
    ref = tmp_path / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    create = ["voice", "create", str(tmp_path / "amy"), "--s1", str(s1), "--s2", str(s2), "--ref", str(ref),
              "--ref-text", "This is Amy.", "--ref-lang", "en", "--consent", "synthetic"]  # fmt: skip
    r = runner.invoke(app, create)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "amy" / "prompt.safetensors").is_file()  # HuBERT came from the models folder
    other = tmp_path / "other.wav"
    sf.write(other, speechlike(4.0, seed=1), 16000)
    args = ["synth", "--s1", str(s1), "--s2", str(s2), "--ref", str(other), "--ref-text", "Another clip.",
            "--ref-lang", "en", "-l", "en", "Hello there.", "-o", str(tmp_path / "o.wav"), "--seed", "1",
            "--consent", "synthetic test clip"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    audio, _ = sf.read(tmp_path / "o.wav")
    assert np.abs(audio).max() > 0
    monkeypatch.setenv("GSVKIT_MODELS", str(tmp_path / "empty"))
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "gsv models fetch hubert" in r.output


def test_serve_and_webui_use_the_folder(models, monkeypatch):
    seen = {}

    class FakeTTS:
        def __init__(self, voice, **kw):
            seen.update(kw)

    monkeypatch.setattr("gsvkit.inference.pipeline.TTS", FakeTTS)
    from gsvkit.serve.cli import _tts

    _tts(None, None, None, None, None, None, "cpu", False)
    assert seen["hubert"] == models / HUBERT and seen["bert"] == models / "chinese-roberta-wwm-ext-large"
    _tts(None, None, None, None, Path("my-hubert"), None, "cpu", False)
    assert seen["hubert"] == Path("my-hubert")
