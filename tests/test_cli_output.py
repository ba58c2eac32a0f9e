"""What the command line prints: no library banners, rounded figures, plain one-line results."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from gsvkit.cli import app
from train_helpers import TINY_S1, toy_dataset


def test_training_prints_no_lightning_banners_and_runs_show_rounds(tmp_path, capfd):
    data = toy_dataset(tmp_path / "data", n_utts=6)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "s1", str(data), "-o", str(run), "-c", str(TINY_S1), "-q",
                                      "-s", "train.epochs=1", "-s", "train.batch_size=2"])
    assert result.exit_code == 0, result.output
    printed = result.output + "".join(capfd.readouterr())
    for banner in ("GPU available", "TPU available", "Tip:", "litlogger", "litmodels", "Seed set"):
        assert banner not in printed, banner
    shown = CliRunner().invoke(app, ["runs", "show", str(run)])
    assert shown.exit_code == 0, shown.output
    chosen = re.search(r"chosen:  epoch 1 \(val/loss ([0-9.]+)\)", shown.output)
    last = re.search(r"last:    epoch 1 \(val/loss ([0-9.]+)\)", shown.output)
    assert chosen and last, shown.output
    assert len(chosen.group(1).split(".")[1]) == 5 and len(last.group(1).split(".")[1]) == 5


def test_similarity_prints_a_named_rounded_figure_json_and_a_spinner(tmp_path, monkeypatch):
    import gsvkit.eval.similarity as similarity
    from gsvkit.utils.console import err_console

    events: list[str] = []

    class Status:
        def __init__(self, message: str) -> None:
            events.append(f"spinner: {message}")

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            events.append("spinner done")

    def fake_similarity(a, b, device="cpu"):
        events.append("scoring")
        return 0.8812345

    monkeypatch.setattr(similarity, "speaker_similarity", fake_similarity)
    monkeypatch.setattr(err_console, "status", Status)
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    text = CliRunner().invoke(app, ["eval", "similarity", str(a), str(b)])
    assert text.exit_code == 0 and text.output.strip() == "similarity: 0.88", text.output
    assert events[0].startswith("spinner: loading the speaker encoder") and events[1:] == ["scoring", "spinner done"]
    as_json = CliRunner().invoke(app, ["eval", "similarity", str(a), str(b), "--json"])
    assert json.loads(as_json.output) == {"similarity": 0.8812345}


def test_boolean_flags_are_shown_as_flags_in_every_help():
    import typer.main

    def paths(command, prefix=()):
        yield prefix
        for name, sub in getattr(command, "commands", {}).items():
            yield from paths(sub, (*prefix, name))

    every = list(paths(typer.main.get_command(app)))
    assert ("prepare",) in every and ("eval", "similarity") in every and ("demo",) in every
    for path in every:
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, (path, shown.output)
        assert "--help" in shown.output and "<bool>" not in shown.output, path
    prepare_help = CliRunner().invoke(app, ["prepare", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--denoise\s+denoise clips", prepare_help), prepare_help
