"""s1 training end to end on a tiny config: trains, validates, stops early on a plateau, exports the best epoch,
resumes, handles Ctrl-C and runs in bf16-mixed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from gsvkit.checkpoint import load_checkpoint
from gsvkit.cli import app
from gsvkit.errors import CheckpointError, DataError
from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.fit import TrainingInterrupted, train_s1
from gsvkit.training.s1_module import S1Module
from train_helpers import TINY_S1, toy_dataset

FAST = ["train.epochs=3", "train.batch_size=2", "train.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("s1data"), n_utts=8)


def test_s1_trains_validates_and_exports(dataset, tmp_path):
    r = train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False,
                 overrides=FAST + ["train.checkpoint.export_every_kept=true"])
    assert r.stop_reason.startswith("reached the last epoch") and r.last_epoch == 3
    assert [e for e, _ in r.val_curve] == [1, 2, 3] and all(v > 0 for _, v in r.val_curve)
    ck = load_checkpoint(r.export)
    assert ck.kind == "s1" and ck.info["epoch"] == r.best_epoch and ck.info["dataset_hash"] == r.dataset_hash
    assert "val/loss" in ck.info["val_metrics"] and "val/top3_acc" in ck.info["val_metrics"]
    assert all(v.dtype == torch.float16 for v in ck.state_dict.values() if v.is_floating_point())
    summary = json.loads((tmp_path / "run" / "s1" / "summary.json").read_text())
    assert summary["best_epoch"] == r.best_epoch
    rows = (tmp_path / "run" / "s1" / "logs" / "csv" / "v00" / "metrics.csv").read_text()
    assert "train/loss" in rows and "lr" in rows and "train/grad_norm" in rows and "val/top3_acc" in rows
    shown = CliRunner().invoke(app, ["runs", "show", str(tmp_path / "run")])
    assert shown.exit_code == 0, shown.output
    assert "val/loss" in shown.output and "<- chosen" in shown.output and "stopped:" in shown.output
    exports = sorted(p.name for p in (tmp_path / "run" / "s1" / "exports").glob("*.safetensors"))
    assert exports == ["s1-epoch=0001.safetensors", "s1-epoch=0002.safetensors", "s1-epoch=0003.safetensors"]
    # The same output directory is not overwritten by accident.
    with pytest.raises(DataError, match="--resume"):
        train_s1(dataset, tmp_path / "run", config=TINY_S1, overrides=FAST, progress=False)


def test_early_stopping_on_a_plateau_exports_the_best_epoch(dataset, tmp_path, monkeypatch):
    # A constructed validation curve: best at epoch 3, then a plateau.
    curve = [5.0, 4.0, 3.0, 3.00001, 3.2, 3.1, 3.3, 3.0, 2.0, 1.0]

    def fake_val_end(self):
        self.log("val/loss", curve[self.current_epoch], on_epoch=True)
        self.log("val/top3_acc", 0.5, on_epoch=True)
        self.last_val_epoch = self.current_epoch

    monkeypatch.setattr(S1Module, "on_validation_epoch_end", fake_val_end)
    r = train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False,
                 overrides=["train.epochs=10", "train.batch_size=4", "train.early_stopping.patience=3"])
    assert r.best_epoch == 3 and r.best_value == pytest.approx(3.0) and r.last_epoch == 6
    assert r.stop_reason == ("early stopping: val/loss did not fall by more than min_delta 0.0001 for 3 validation "
                             "checks in a row (patience 3); best 3 at epoch 3")
    best = read_checkpoint(r.best_checkpoint)["state_dict"]
    exported = load_file(r.export)
    assert set(exported) == {k.removeprefix("model.") for k in best if k.startswith("model.")}
    for k, v in exported.items():
        assert torch.equal(v, best["model." + k].half()), k
    last = read_checkpoint(sorted((tmp_path / "run" / "s1" / "checkpoints").glob("epoch=*.ckpt"))[-1])["state_dict"]
    assert any(not torch.equal(last[k], best[k]) for k in best if k.startswith("model."))  # training went on


def test_resume_continues_to_the_same_weights(dataset, tmp_path):
    full = train_s1(dataset, tmp_path / "a", config=TINY_S1, progress=False,
                    overrides=FAST + ["train.early_stopping.enabled=false"])
    part = train_s1(dataset, tmp_path / "b", config=TINY_S1, progress=False,
                    overrides=FAST[1:] + ["train.epochs=1", "train.early_stopping.enabled=false"])
    assert part.last_epoch == 1 and full.last_epoch == 3
    resumed = train_s1(dataset, tmp_path / "b", resume=True, progress=False, overrides=["train.epochs=3"])
    assert resumed.last_epoch == 3
    a = read_checkpoint(sorted((tmp_path / "a" / "s1" / "checkpoints").glob("epoch=*.ckpt"))[-1])
    b = read_checkpoint(sorted((tmp_path / "b" / "s1" / "checkpoints").glob("epoch=*.ckpt"))[-1])
    assert a["global_step"] == b["global_step"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    # Two logger versions: the resumed run adds, never overwrites.
    assert len(list((tmp_path / "b" / "s1" / "logs" / "csv").glob("v*"))) == 2


def test_ctrl_c_writes_a_resumable_checkpoint(dataset, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = S1Module.training_step

    def interrupting(self, batch, batch_idx):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, batch, batch_idx)

    monkeypatch.setattr(S1Module, "training_step", interrupting)
    with pytest.raises(TrainingInterrupted, match="--resume") as e:
        train_s1(dataset, tmp_path / "run", config=TINY_S1, overrides=FAST, progress=False)
    ckpts = list((tmp_path / "run" / "s1" / "checkpoints").glob("*interrupted.ckpt"))
    assert len(ckpts) == 1 and str(ckpts[0]) in str(e.value)
    monkeypatch.setattr(S1Module, "training_step", real)
    r = train_s1(dataset, tmp_path / "run", resume=True, progress=False)
    assert r.last_epoch == 3 and r.export
    assert not list((tmp_path / "run" / "s1" / "checkpoints").glob("*interrupted.ckpt"))  # superseded, rotated


def test_bf16_mixed_on_cpu_with_ema_stochastic_depth_and_freezing(dataset, tmp_path, monkeypatch, capsys):
    from gsvkit.models.s1.gpt import Transformer, TransformerLayer

    calls = {"stack": 0, "layers": 0}
    init: dict = {}
    real_stack, real_layer = Transformer.forward, TransformerLayer.forward

    def stack(self, *a, **k):
        calls["stack"] += int(self.training)
        return real_stack(self, *a, **k)

    def layer(self, *a, **k):
        calls["layers"] += int(self.training)
        return real_layer(self, *a, **k)

    monkeypatch.setattr(Transformer, "forward", stack)
    monkeypatch.setattr(TransformerLayer, "forward", layer)
    monkeypatch.setattr(S1Module, "on_train_start",
                        lambda self: init.update({k: v.clone() for k, v in self.model.state_dict().items()}),
                        raising=False)
    r = train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False,
                 overrides=["train.epochs=2", "train.precision=bf16-mixed", "train.ema.enabled=true",
                            "train.stochastic_depth=0.5", "train.freeze.last_k_layers=1",
                            "train.freeze.unfreeze_at_epoch=1", "train.early_stopping.enabled=false"])
    assert r.export and r.precision == "bf16-mixed" and r.val_curve and all(v == v for _, v in r.val_curve)
    assert calls["layers"] < 2 * calls["stack"]  # stochastic depth skipped some of the 2 layers
    assert "epoch 2: unfreezing" in capsys.readouterr().out  # 1-based, as the file names
    epochs = sorted((tmp_path / "run" / "s1" / "checkpoints").glob("epoch=*.ckpt"))
    first, second = (read_checkpoint(p)["state_dict"] for p in epochs[:2])
    # Epoch 1: only the last layer and the head train; from epoch 2 everything does.
    for name in ("h.layers.0.linear1.weight", "ar_text_embedding.word_embeddings.weight"):
        assert torch.equal(first["model." + name], init[name]), name
        assert not torch.equal(second["model." + name], init[name]), name
    for name in ("h.layers.1.linear1.weight", "ar_predict_layer.weight"):
        assert not torch.equal(first["model." + name], init[name]), name
    # The export holds the EMA average, not the raw weights of its epoch.
    exported, raw = load_file(r.export), read_checkpoint(r.best_checkpoint)["state_dict"]
    assert any(not torch.equal(v, raw["model." + k].half()) for k, v in exported.items())


def test_pretrained_from_an_export_and_incompatible_version(dataset, tmp_path):
    r = train_s1(dataset, tmp_path / "a", config=TINY_S1, progress=False, overrides=["train.epochs=1"])
    r2 = train_s1(dataset, tmp_path / "b", pretrained=r.export, progress=False, overrides=["train.epochs=1"])
    assert r2.export
    with pytest.raises(CheckpointError, match="v1"):
        train_s1(dataset, tmp_path / "c", config=TINY_S1, pretrained=r.export, progress=False,
                 overrides=["model.version=v1", "model.phoneme_vocab_size=732"])


def test_full_disk_during_a_save_keeps_earlier_checkpoints(dataset, tmp_path, monkeypatch):
    import errno

    import gsvkit.training.callbacks as cb

    real_save = torch.save
    saves = {"n": 0}

    def failing_save(obj, f, *a, **k):
        saves["n"] += 1
        if saves["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(cb.torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="earlier checkpoints .* are intact"):
        train_s1(dataset, tmp_path / "run", config=TINY_S1, overrides=FAST, progress=False)
    ckpt_dir = tmp_path / "run" / "s1" / "checkpoints"
    names = sorted(p.name for p in ckpt_dir.glob("epoch=*.ckpt"))
    assert names == ["epoch=0001-step=0000003.ckpt"] and not list(ckpt_dir.glob(".*.tmp"))
    assert read_checkpoint(ckpt_dir / names[0])["epoch"] == 0
