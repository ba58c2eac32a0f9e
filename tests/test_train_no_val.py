"""Training a dataset without a validation split: refused by default (the message names the option), and with
`train.require_validation=false` both stages train, save, resume and export the last epoch, saying so."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gsvkit.checkpoint import load_checkpoint
from gsvkit.cli import app
from gsvkit.config import ConfigError
from gsvkit.data.manifest import read_manifest, write_manifest
from gsvkit.errors import DataError
from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.fit import format_summary, train_s1, train_s2
from train_helpers import TINY_S1, TINY_S2, toy_dataset

NO_VAL = ["train.require_validation=false", "train.batch_size=2", "train.log_every_n_steps=1"]
REASON = "reached the last epoch (2); no validation split"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = toy_dataset(tmp_path_factory.mktemp("noval"), n_utts=6)
    write_manifest(root, [u.model_copy(update={"split": "train"}) for u in read_manifest(root)])
    assert {u.split for u in read_manifest(root)} == {"train"}
    return root


def test_default_refuses_and_names_the_option(dataset, tmp_path):
    with pytest.raises(DataError, match=r"validation split is empty.*train\.require_validation=false"):
        train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False)
    with pytest.raises(DataError, match=r"train\.require_validation=false"):
        train_s2(dataset, tmp_path / "run", config=TINY_S2, progress=False)
    refused = CliRunner().invoke(app, ["train", "s1", str(dataset), "--out", str(tmp_path / "cli"), "-c", str(TINY_S1),
                                       "-q"])
    assert refused.exit_code == 2 and "require_validation" in refused.output
    # Plateau scheduling has nothing to watch without validation: refused before any training.
    with pytest.raises(ConfigError, match="plateau"):
        train_s1(dataset, tmp_path / "p", config=TINY_S1, progress=False,
                 overrides=NO_VAL + ["train.plateau.enabled=true"])


def _check_no_val_run(r, stage_dir, epochs: int) -> None:
    assert not r.validation and r.stop_reason == REASON and r.last_epoch == epochs
    assert r.best_epoch is None and r.best_checkpoint is None and r.val_curve == [] and r.last_value is None
    ck = load_checkpoint(r.export)
    assert ck.info["epoch"] == epochs and ck.info["val_metrics"] == {} and ck.info["monitor_value"] is None
    index = json.loads((stage_dir / "checkpoints" / "index.json").read_text())
    assert index["best"] is None and index["last"] == ck.info["source_checkpoint"]
    assert all(r["score"] is None for r in index["checkpoints"])
    summary = json.loads((stage_dir / "summary.json").read_text())
    assert summary["validation"] is False and summary["stop_reason"] == REASON
    assert "val/" not in (stage_dir / "logs" / "csv" / "v00" / "metrics.csv").read_text()
    assert "no validation" in format_summary(r)


def test_s1_without_validation_trains_exports_the_last_epoch_and_resumes(dataset, tmp_path, capsys):
    full = train_s1(dataset, tmp_path / "a", config=TINY_S1, progress=False, overrides=NO_VAL + ["train.epochs=2"])
    assert "warning: s1: the dataset has no validation split" in capsys.readouterr().out
    _check_no_val_run(full, tmp_path / "a" / "s1", 2)
    # The export is the last epoch's weights.
    exported = load_checkpoint(full.export)
    last = read_checkpoint(tmp_path / "a" / "s1" / "checkpoints" / exported.info["source_checkpoint"])
    assert last["epoch"] == 1  # Lightning's 0-based epoch of the second epoch
    for k, v in exported.state_dict.items():
        assert torch.equal(v, last["state_dict"]["model." + k].half()), k

    shown = CliRunner().invoke(app, ["runs", "show", str(tmp_path / "a")])
    assert shown.exit_code == 0, shown.output
    assert "no validation" in shown.output and REASON in shown.output and "<- chosen" not in shown.output

    # Resume: one epoch, then the same command with --resume reaches the uninterrupted run's weights.
    part = train_s1(dataset, tmp_path / "b", config=TINY_S1, progress=False, overrides=NO_VAL + ["train.epochs=1"])
    assert part.last_epoch == 1 and not part.validation
    resumed = train_s1(dataset, tmp_path / "b", resume=True, progress=False, overrides=["train.epochs=2"])
    _check_no_val_run(resumed, tmp_path / "b" / "s1", 2)
    a, b = load_checkpoint(full.export).state_dict, load_checkpoint(resumed.export).state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_s2_without_validation_trains_and_exports_the_last_epoch(dataset, tmp_path):
    r = train_s2(dataset, tmp_path / "run", config=TINY_S2, progress=False,
                 overrides=NO_VAL + ["train.epochs=2", "train.min_items_per_epoch=0"])
    _check_no_val_run(r, tmp_path / "run" / "s2", 2)
    ck = load_checkpoint(r.export)
    assert ck.kind == "s2" and not any(k.startswith("enc_q.") for k in ck.state_dict)


def test_cli_set_and_no_change_when_there_is_a_val_split(tmp_path):
    with_val = toy_dataset(tmp_path, n_utts=6)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "s1", str(with_val), "--out", str(out), "-c", str(TINY_S1), "-q",
                                   "--set", "train.require_validation=false", "--set", "train.epochs=1"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "s1" / "summary.json").read_text())
    assert summary["validation"] is True and summary["best_epoch"] == 1 and len(summary["val_curve"]) == 1
    assert "no validation" not in res.output
