"""Bad flags and bad text on the command line: one error line, exit 2, no traceback, nothing loaded first."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import typer
from typer.testing import CliRunner

from gsvkit.cli import app
from gsvkit.config import ConfigError, S1Config
from gsvkit.errors import GsvError, TextError, UsageError
from gsvkit.inference.pipeline import TTS
from gsvkit.inference.textprep import TextReader, split_fragments
from gsvkit.training.fit import TrainingInterrupted, apply_overrides
from gsvkit.utils.cli_options import accelerator_callback, resolve_device

runner = CliRunner()

BAD_FLAGS = [
    (["synth", "Hello.", "--threads", "-1"], "--threads"),
    (["synth", "Hello.", "--threads", "0"], "--threads"),
    (["synth", "Hello.", "--device", "tpu9"], "--device"),
    (["train", "s1", "data", "-o", "out", "--devices", "0"], "--devices"),
    (["train", "s2", "data", "-o", "out", "--accelerator", "tpu9"], "--device' / '--accelerator"),
    (["train", "s1", "data", "-o", "out", "--device", "npu"], "--device"),
    (["serve", "--max-jobs", "0"], "--max-jobs"),
    (["serve", "--max-upload-mb", "0"], "--max-upload-mb"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--port", "0"], "--port"),
    (["webui", "--port", "70000"], "--port"),
    (["eval", "similarity", "a.wav", "b.wav", "--device", "gpu7"], "--device"),
    (["prepare", "in", "-o", "out", "--device", "npu"], "--device"),
]


@pytest.mark.parametrize("args, option", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_usage_error(args, option):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: --device cuda is valid here")
def test_device_cuda_without_cuda_is_refused_before_loading():
    result = runner.invoke(app, ["synth", "Hello.", "--device", "cuda", "--s1", "missing1", "--s2", "missing2"])
    assert result.exit_code == 2
    assert "no CUDA device is available here" in result.output and "missing1" not in result.output
    with pytest.raises(UsageError, match="no CUDA device"):
        resolve_device("cuda:0")


def test_device_auto_resolves_to_what_is_there():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto") and resolve_device("CPU") == "cpu"
    with pytest.raises(UsageError, match="cuda or cuda:N"):
        resolve_device("cuda:x")


def test_latin1_text_file_is_one_error(tmp_path):
    f = tmp_path / "text.txt"
    f.write_bytes("Caf\xe9 au lait.".encode("latin-1"))
    result = runner.invoke(app, ["synth", "--text-file", str(f), "--s1", "a", "--s2", "b"])
    assert result.exit_code == 2
    assert f"{f}: not UTF-8 text" in result.output and "Traceback" not in result.output


def test_python_tag_in_set_is_a_config_error():
    with pytest.raises(ConfigError, match="not plain YAML data"):
        apply_overrides(S1Config(), ["train.epochs=!!python/object/apply:os.system ['touch /tmp/x']"])
    assert apply_overrides(S1Config(), ["train.epochs=3"]).train.epochs == 3


def test_error_types_form_one_hierarchy():
    # commands catch GsvError once: configs, parameters and interruptions are all of it
    from gsvkit.inference.params import ParameterError

    for cls in (ConfigError, ParameterError, TrainingInterrupted, UsageError, TextError):
        assert issubclass(cls, GsvError), cls


def _features(text: str, lang: str):
    job = SimpleNamespace(reader=TextReader("v2", bert=None))
    return TTS._features(job, split_fragments(text, lang, "cut5"), lang)  # type: ignore[arg-type]


def test_chinese_without_bert_says_so():
    with pytest.raises(TextError, match=r"Chinese needs --bert DIR"):
        _features("你好，世界。", "zh")


def test_auto_on_mixed_text_never_drops_the_chinese_sentence():
    with pytest.raises(TextError, match=r"Chinese needs --bert DIR"):
        _features("Hello there. 你好，世界。", "auto")
    assert len(_features("Hello there. How are you?", "auto")) == 2  # English alone still speaks


@pytest.mark.parametrize(
    "args, said",
    [
        (["text", "hello", "--lang", "klingon"], "unknown language mode 'klingon'"),
        (["eval", "mel", "/nope.wav", "/nope2.wav"], "/nope.wav: audio file not found"),
        (["detect", "/nope.wav"], "/nope.wav"),
    ],
)
def test_every_command_turns_a_gsv_error_into_one_line(args, said):
    # these commands have no try/except of their own: one decorator on every registered command does it
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and said in result.output
    assert len([x for x in result.output.splitlines() if x.strip()]) == 1
    assert not isinstance(result.exception, GsvError)


def test_train_device_names_are_the_other_commands_names(monkeypatch):
    """`gsv train --device cuda` (or the older `gpu`) is Lightning's "gpu", so the fp16 scaler is built for CUDA."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert accelerator_callback("cuda") == accelerator_callback("gpu") == "gpu"
    assert accelerator_callback("cpu") == "cpu" and accelerator_callback("auto") == "auto"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(typer.BadParameter, match="no CUDA device"):
        accelerator_callback("cuda")
