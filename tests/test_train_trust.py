"""Checkpoints and settings a user can rely on: unknown monitored metrics are refused, damaged checkpoints
(flipped bits, any file the run needs) are caught, set aside and replaced by intact ones, temporary files of
interrupted saves are cleaned up, and `best.ckpt`/`last.ckpt` always name the best and the newest epoch."""

from __future__ import annotations

import os

import pytest

from gsvkit.config import ConfigError
from gsvkit.errors import CheckpointError
from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.fit import train_s1, train_s2
from gsvkit.training.s1_module import S1Module
from train_helpers import TINY_S1, TINY_S2, flip_tensor_bytes, toy_dataset

FAST = ["train.batch_size=4", "train.early_stopping.enabled=false", "train.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("trust"), n_utts=8)





def fake_curve(monkeypatch, curve: list[float]) -> None:
    """Validation reports `curve[epoch]` (0-based epoch index) as val/loss."""

    def fake_val_end(self):
        self.log("val/loss", curve[self.current_epoch], on_epoch=True)
        self.log("val/top3_acc", 0.5, on_epoch=True)
        self.last_val_epoch = self.current_epoch

    monkeypatch.setattr(S1Module, "on_validation_epoch_end", fake_val_end)


@pytest.mark.parametrize("stage", ["s1", "s2"])
def test_a_misspelt_monitor_is_refused_with_the_metrics_the_stage_logs(dataset, tmp_path, stage):
    train, cfg, listed = ((train_s1, TINY_S1, "val/loss, val/top3_acc") if stage == "s1"
                          else (train_s2, TINY_S2, "val/mel_l1, val/recon_mel_l1"))
    with pytest.raises(ConfigError, match=f"logs no metric 'val/los'.*{listed}"):
        train(dataset, tmp_path / "run", config=cfg, progress=False, overrides=["train.early_stopping.monitor=val/los"])
    assert not (tmp_path / "run" / stage / "checkpoints").exists()  # refused before any training


def test_flipped_bits_are_caught_and_resume_falls_back_to_the_previous_checkpoint(dataset, tmp_path, capsys):
    train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False, overrides=FAST + ["train.epochs=2"])
    ckpt_dir = tmp_path / "run" / "s1" / "checkpoints"
    newest = ckpt_dir / "epoch=0002-step=0000004.ckpt"
    flip_tensor_bytes(newest)
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        read_checkpoint(newest)
    # What an interrupted save leaves behind, removed on the next start.
    stale = ckpt_dir / ".epoch=0003-step=0000006.ckpt.x1y2z3.tmp"
    stale.write_bytes(b"\0" * 1000)
    r = train_s1(dataset, tmp_path / "run", resume=True, progress=False, overrides=["train.epochs=3"])
    assert "damaged checkpoint" in capsys.readouterr().out
    assert (ckpt_dir / "corrupt" / newest.name).is_file() and not stale.exists()
    # Resumed from epoch 1: epochs 2 and 3 were trained again.
    assert r.last_epoch == 3 and [e for e, _ in r.val_curve] == [1, 2, 3]
    assert read_checkpoint(ckpt_dir / "epoch=0003-step=0000006.ckpt")["global_step"] == 6


def test_a_damaged_best_checkpoint_is_set_aside_and_the_next_best_exported(dataset, tmp_path, monkeypatch, capsys):
    fake_curve(monkeypatch, [1.0, 3.0, 2.0, 4.0])
    train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False, overrides=FAST + ["train.epochs=3"])
    ckpt_dir = tmp_path / "run" / "s1" / "checkpoints"
    best = ckpt_dir / "epoch=0001-step=0000002.ckpt"
    assert os.path.samefile(ckpt_dir / "best.ckpt", best)
    best.write_bytes(best.read_bytes()[:5000])  # truncated: no longer a readable zip
    r = train_s1(dataset, tmp_path / "run", resume=True, progress=False, overrides=["train.epochs=4"])
    assert "left it out of the ranking" in capsys.readouterr().out
    assert (ckpt_dir / "corrupt" / best.name).is_file()
    assert r.best_epoch == 3 and r.export and r.last_epoch == 4
    assert os.path.samefile(ckpt_dir / "best.ckpt", ckpt_dir / "epoch=0003-step=0000006.ckpt")
    assert os.path.samefile(ckpt_dir / "last.ckpt", ckpt_dir / "epoch=0004-step=0000008.ckpt")


def test_best_and_last_names_and_top_k_zero_keeps_the_best(dataset, tmp_path, monkeypatch):
    fake_curve(monkeypatch, [2.0, 1.0, 3.0, 4.0])
    r = train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False,
                 overrides=FAST + ["train.epochs=4", "train.checkpoint.top_k=0", "train.checkpoint.keep_last=1",
                                   "train.checkpoint.schedule=[[1000, 1000]]"])
    ckpt_dir = tmp_path / "run" / "s1" / "checkpoints"
    epoch_files = sorted(p.name for p in ckpt_dir.glob("epoch=*.ckpt"))
    assert epoch_files == ["epoch=0002-step=0000004.ckpt", "epoch=0004-step=0000008.ckpt"]
    assert r.best_epoch == 2 and r.export
    assert os.path.samefile(ckpt_dir / "best.ckpt", ckpt_dir / epoch_files[0])
    assert os.path.samefile(ckpt_dir / "last.ckpt", ckpt_dir / epoch_files[1])
    assert read_checkpoint(ckpt_dir / "best.ckpt")["global_step"] == 4


def test_mixup_on_a_single_speaker_dataset_says_it_does_nothing(dataset, tmp_path, capsys):
    train_s2(dataset, tmp_path / "run", config=TINY_S2, progress=False,
             overrides=["train.mixup.enabled=true", "train.epochs=1", "train.batch_size=4",
                        "train.min_items_per_epoch=0", "train.val_audio_samples=0"])
    assert "the training split has one speaker: it does nothing here" in capsys.readouterr().out
