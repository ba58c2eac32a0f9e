"""`gsv prepare` on the command line: documented options, config files, and errors a user can act on."""

from __future__ import annotations

import re

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from gsvkit.cli import app
from gsvkit.data.prepare_config import PrepareConfig, load_prepare_config


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_help_documents_every_option():
    result = CliRunner().invoke(app, ["prepare", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    out = plain(result.output)
    for field in PrepareConfig.model_fields:
        if field in ("inputs", "text_version", "slicer"):
            continue
        flag = {"language": "--lang"}.get(field, "--" + field.replace("_", "-"))
        assert flag in out, flag
    for flag in ("--threshold", "--min-length", "--min-interval", "--hop-size", "--max-sil-kept", "--max-length"):
        assert flag in out


def test_config_file_with_command_line_overrides(tmp_path):
    (tmp_path / "prepare.yaml").write_text(
        "inputs: [a]\nout: ds\nlanguage: zh\nval_fraction: 0.2\nslicer:\n  threshold: -40\n  max_length: 12\n",
        encoding="utf-8",
    )
    cfg = load_prepare_config(tmp_path / "prepare.yaml", {"val_fraction": 0.3, "slicer": {"threshold": -30}})
    assert (cfg.language, cfg.val_fraction, cfg.slicer.threshold, cfg.slicer.max_length) == ("zh", 0.3, -30, 12)


def test_errors_are_one_clear_line(tmp_path):
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "x.wav", (0.2 * np.random.default_rng(0).standard_normal(32000)).astype("f4"), 16000)
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", str(tmp_path / "in"), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 2
    assert "no transcript" in plain(result.output) and "--asr-model" in plain(result.output)
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["prepare", str(tmp_path / "in"), "-o", str(tmp_path / "ds"), "--loudness", "loud"])
    assert result.exit_code == 2 and "loudness" in plain(result.output)
    result = runner.invoke(app, ["prepare", str(tmp_path / "nothing"), "-o", str(tmp_path / "ds")])
    assert result.exit_code == 2 and "input not found" in plain(result.output)
    result = runner.invoke(app, ["prepare", str(tmp_path / "in"), "-o", str(tmp_path / "in")])
    assert result.exit_code == 2 and "inside the output folder" in plain(result.output)


def _recording(folder, name: str, seconds: float, text: str):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    sf.write(folder / name, (0.2 * rng.standard_normal(int(16000 * seconds))).astype("f4"), 16000)
    listing = folder / "t.list"
    with listing.open("a", encoding="utf-8") as f:
        f.write(f"{name}|spk|EN|{text}\n")
    return listing


def test_no_usable_clip_exits_non_zero_with_the_reasons(tmp_path):
    listing = _recording(tmp_path / "in", "short.wav", 0.3, "Hi.")
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "in"), "--transcripts", str(listing),
                                      "-o", str(tmp_path / "ds"), "-q"])
    out = plain(result.output)
    assert result.exit_code == 1, out
    assert "no usable clip" in out and "short.wav" in out and "report.md" in out
    assert "Traceback" not in result.output


def test_missing_hubert_is_a_warning_on_the_terminal_and_lines_are_whole(tmp_path):
    listing = _recording(tmp_path / "in", "a.wav", 1.5, "Hello there, my friend.")
    out_dir = tmp_path / ("dataset-with-a-long-name-" * 4)  # the summary line is far wider than 80 columns
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "in"), "--transcripts", str(listing),
                                      "-o", str(out_dir), "-q"])
    out = plain(result.output)
    assert result.exit_code == 0, out
    assert "warning: no --hubert" in out
    # Not a terminal: no wrapping at 80 columns, the summary stays one line.
    assert any("1 utterances" in line and "report.md" in line for line in out.splitlines()), out


def test_bracketed_text_in_messages_is_printed_as_written(capsys):
    import typer

    from gsvkit.utils.console import fail

    try:
        fail("needs the eval extra: pip install 'gsvkit[eval]'")
    except typer.Exit as stop:
        assert stop.exit_code == 2
    assert "pip install 'gsvkit[eval]'" in capsys.readouterr().err
