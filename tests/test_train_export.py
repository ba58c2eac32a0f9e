"""gsvkit's own training checkpoints are readable by its own tools: `gsv info` (with the checksum checked),
`gsv convert` (with the trained config) and `gsv export checkpoint` of any kept epoch, which round-trips."""

from __future__ import annotations

import shutil

import pytest
import torch
from typer.testing import CliRunner

from gsvkit.checkpoint import load_checkpoint, load_s1, load_s2
from gsvkit.cli import app
from gsvkit.config import load_config
from gsvkit.inference.bundle import check_pair
from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.fit import train_s1, train_s2
from train_helpers import TINY_S1, TINY_S2, flip_tensor_bytes, toy_dataset

pytestmark = pytest.mark.slow
COMMON = ["train.epochs=2", "train.batch_size=4", "train.early_stopping.enabled=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    ds = toy_dataset(tmp, n_utts=8)
    train_s2(ds, tmp / "run", config=TINY_S2, progress=False,
             overrides=COMMON + ["train.min_items_per_epoch=0", "train.val_audio_samples=0"])
    train_s1(ds, tmp / "run", config=TINY_S1, progress=False, overrides=COMMON)
    return tmp


def _first_epoch(runs, stage):
    return next((runs / "run" / stage / "checkpoints").glob("epoch=0001-*.ckpt"))


def test_info_reads_an_s2_training_checkpoint_and_verify_catches_damage(runs, tmp_path):
    ckpt = _first_epoch(runs, "s2")
    r = CliRunner().invoke(app, ["info", str(ckpt), "--verify"])
    assert r.exit_code == 0, r.output
    assert "s2 training checkpoint" in r.output and "sha256 matches" in r.output
    assert "epoch         1" in r.output
    damaged = tmp_path / ckpt.name
    shutil.copy(ckpt, damaged)
    flip_tensor_bytes(damaged)
    r = CliRunner().invoke(app, ["info", str(damaged), "--verify"])
    assert r.exit_code != 0 and "damaged checkpoint" in r.output and "Traceback" not in r.output


def test_export_of_a_chosen_s2_epoch_round_trips(runs, tmp_path):
    ckpt = _first_epoch(runs, "s2")
    out = tmp_path / "s2-epoch1.safetensors"
    r = CliRunner().invoke(app, ["export", "checkpoint", str(ckpt), str(out)])
    assert r.exit_code == 0, r.output
    exported = load_checkpoint(out)
    assert exported.kind == "s2" and exported.info["epoch"] == 1 and exported.info["dataset_hash"]
    state = read_checkpoint(ckpt)["state_dict"]
    weights = {k.removeprefix("net_g."): v for k, v in state.items()
               if k.startswith("net_g.") and not k.startswith("net_g.enc_q.")}
    assert set(exported.state_dict) == set(weights)
    for k, v in exported.state_dict.items():
        assert torch.equal(v, weights[k].half() if v.is_floating_point() else weights[k]), k
    load_s2(out)  # the trained (tiny) architecture, not the official one
    again = CliRunner().invoke(app, ["export", "checkpoint", str(ckpt), str(out)])
    assert again.exit_code != 0 and "already exists" in again.output  # no silent overwrite


def test_convert_of_an_s1_training_checkpoint_keeps_the_trained_config(runs, tmp_path):
    out = tmp_path / "s1.safetensors"
    r = CliRunner().invoke(app, ["convert", str(_first_epoch(runs, "s1")), str(out)])
    assert r.exit_code == 0, r.output
    s1 = load_checkpoint(out)
    assert s1.config.model == load_config(TINY_S1).model
    load_s1(out)
    s2_out = tmp_path / "s2.safetensors"
    assert CliRunner().invoke(app, ["convert", str(_first_epoch(runs, "s2")), str(s2_out)]).exit_code == 0
    check_pair(s1.config.model, load_checkpoint(s2_out).config.model)  # the two stages pair up
