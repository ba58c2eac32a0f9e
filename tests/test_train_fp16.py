"""fp16 mixed precision with loss scaling runs on CPU (float16 autocast + torch's GradScaler, no silent switch to
bf16), its scaler state travels in checkpoints and resumes exactly, and a GAN step moves the scale once."""

from __future__ import annotations

import pytest
import torch

from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.fit import train_s1, train_s2
from gsvkit.training.s1_module import S1Module
from train_helpers import TINY_S1, TINY_S2, toy_dataset

pytestmark = pytest.mark.slow
S1_ARGS = ["train.batch_size=2", "train.precision=16-mixed", "train.early_stopping.enabled=false"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("fp16"), n_utts=8)


def _scaler_state(out, epoch: int) -> dict:
    path = next((out / "s1" / "checkpoints").glob(f"epoch={epoch:04d}-*.ckpt"))
    return read_checkpoint(path)


_REAL_INIT = torch.amp.GradScaler.__init__


def _init(self, device="cuda", **kwargs):
    _REAL_INIT(self, device, init_scale=2.0**40, growth_interval=1000)


def test_s1_fp16_scaler_on_cpu_and_its_state_resumes(dataset, tmp_path, monkeypatch):
    dtypes = set()
    real = S1Module._compute_loss

    def spy(self, batch):
        out = real(self, batch)
        dtypes.add(self.model.ar_predict_layer(torch.zeros(1, self.cfg.model.embedding_dim)).dtype)
        return out

    monkeypatch.setattr(S1Module, "_compute_loss", spy)
    # A huge initial scale overflows fp16 gradients at once: the scaler must skip steps and halve its scale.
    monkeypatch.setattr(torch.amp.GradScaler, "__init__", _init)
    full = train_s1(dataset, tmp_path / "full", config=TINY_S1, progress=False, overrides=S1_ARGS + ["train.epochs=2"])
    assert full.precision == "16-mixed" and dtypes == {torch.float16}  # fp16 autocast, not bf16
    state = _scaler_state(tmp_path / "full", 2)["StepScaledPrecision"]
    assert state["scale"] < 2.0**40  # overflowing steps were detected and the scale lowered
    part = train_s1(dataset, tmp_path / "part", config=TINY_S1, progress=False, overrides=S1_ARGS + ["train.epochs=1"])
    assert part.last_epoch == 1
    resumed = train_s1(dataset, tmp_path / "part", resume=True, progress=False, overrides=["train.epochs=2"])
    assert resumed.opt_steps == full.opt_steps
    a, b = _scaler_state(tmp_path / "full", 2), _scaler_state(tmp_path / "part", 2)
    assert a["StepScaledPrecision"] == b["StepScaledPrecision"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def test_s2_gan_step_updates_the_scale_once(dataset, tmp_path, monkeypatch):
    updates = {"n": 0}
    real = torch.amp.GradScaler.update

    def counting(self, *a, **k):
        updates["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(torch.amp.GradScaler, "update", counting)
    r = train_s2(dataset, tmp_path / "run", config=TINY_S2, progress=False,
                 overrides=["train.batch_size=2", "train.min_items_per_epoch=0", "train.epochs=1",
                            "train.val_audio_samples=0", "train.precision=16-mixed"])
    assert r.precision == "16-mixed" and r.opt_steps == 3
    assert updates["n"] == r.opt_steps  # one update per GAN step, not one per optimizer (6)
    saved = read_checkpoint(next((tmp_path / "run" / "s2" / "checkpoints").glob("epoch=*.ckpt")))
    assert "scale" in saved["StepScaledPrecision"]
