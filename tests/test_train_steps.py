"""What one optimizer step does: gradient accumulation adds up to the large batch's gradient, clipping bounds the
gradient norm, and ReduceLROnPlateau lowers the learning rate when the validation metric stops improving."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from gsvkit.config import load_config
from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.datamodule import S1DataModule
from gsvkit.training.fit import apply_overrides, train_s1
from gsvkit.training.s1_module import S1Module
from train_helpers import TINY_S1, toy_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("steps"), n_utts=8)


def _grads(module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.model.parameters() if p.grad is not None])


def test_accumulated_gradient_equals_the_large_batch(dataset, monkeypatch):
    base = load_config(TINY_S1)
    dm = S1DataModule(dataset, base)
    dm.setup()
    items = [dm.train_set[i] for i in range(4)]
    # The loss is normalised per loader batch: with equal target counts the halves weigh like the whole.
    n = min(it.semantic.numel() for it in items)
    items = [dataclasses.replace(it, semantic=it.semantic[:n]) for it in items]
    torch.manual_seed(0)
    large = S1Module(apply_overrides(base, ["train.accumulate_grad_batches=1"]))
    small = S1Module(apply_overrides(base, ["train.accumulate_grad_batches=2"]))
    small.load_state_dict(large.state_dict())
    for m, batches in ((large, [items]), (small, [items[:2], items[2:]])):
        m.eval()  # the same function in both (no stochastic depth)
        monkeypatch.setattr(m, "window_ends", lambda: False)  # gradients only: the step itself needs a trainer
        monkeypatch.setattr(m, "manual_backward", lambda loss: loss.backward())
        for b in batches:
            batch = dm.collate(b)
            m._batch_targets = float(batch.semantic_lengths.sum() + len(batch))
            m.run_micro_batches(batch, m._micro_step)
    assert torch.allclose(_grads(large), _grads(small), atol=1e-7, rtol=1e-4)
    assert not torch.allclose(_grads(large), 2 * _grads(small), rtol=1e-2)  # the window's share is applied


def test_clipping_bounds_the_gradient_norm(monkeypatch):
    module = S1Module(apply_overrides(load_config(TINY_S1), ["train.gradient_clip=0.5"]))
    opt = torch.optim.SGD(module.model.parameters(), lr=0.1)
    monkeypatch.setattr(module, "_optimizer_list", lambda: [types.SimpleNamespace(optimizer=opt)])  # as Lightning's
    for p in module.model.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.on_before_optimizer_step(opt)
    after = torch.linalg.vector_norm(_grads(module))
    assert module.grad_norms[0] > 100 and float(after) == pytest.approx(0.5, rel=1e-4)  # logged: before clipping


@pytest.mark.parametrize(("curve", "reduced"), [([3.0, 3.0, 3.0], True), ([3.0, 2.0, 1.0], False)])
def test_plateau_lowers_the_lr_on_the_validation_metric(dataset, tmp_path, monkeypatch, curve, reduced):
    def fixed_val_step(self, batch, batch_idx):
        # The validation loss is `curve[epoch]` (10 targets of that mean loss); the module's own epoch end runs.
        self._sums += torch.tensor([curve[self.current_epoch] * 10.0, 10.0, 5.0], dtype=torch.float64)
        self._codes = 10.0

    monkeypatch.setattr(S1Module, "validation_step", fixed_val_step)
    r = train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False,
                 overrides=["train.epochs=3", "train.batch_size=4", "train.early_stopping.enabled=false",
                            "train.plateau.enabled=true", "train.plateau.patience=0", "train.plateau.factor=0.5"])
    assert [v for _, v in r.val_curve] == pytest.approx(curve)
    lrs = [read_checkpoint(p)["optimizer_states"][0]["param_groups"][0]["lr"]
           for p in sorted((tmp_path / "run" / "s1" / "checkpoints").glob("epoch=*.ckpt"))]
    cfg = load_config(TINY_S1)
    peak = cfg.optimizer.lr * cfg.train.lr_scale
    assert lrs == (pytest.approx([peak, peak / 2, peak / 4]) if reduced else pytest.approx([peak] * 3))
