"""Out-of-memory backoff at every phase of a training step: an injected `torch.OutOfMemoryError` (CPU) anywhere in
the s2 GAN step or after an optimizer step halves the micro-batch, the run continues, each optimizer steps once
per loader batch and the batch size is kept by accumulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.ema import EMA
from gsvkit.training.fit import train_s1, train_s2
from gsvkit.training.s2_module import S2Module
from train_helpers import TINY_S1, TINY_S2, toy_dataset

pytestmark = pytest.mark.slow

S2_ARGS = ["train.batch_size=2", "train.min_items_per_epoch=0", "train.epochs=1", "train.val_audio_samples=0",
           "train.early_stopping.enabled=false", "train.ema.enabled=true"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("oom"), n_utts=8)


def _oom_once(monkeypatch, cls, name: str, when) -> dict:
    """Make `cls.name` raise one OutOfMemoryError the first time `when(args)` holds; returns a record of it."""
    real = getattr(cls, name)
    state = {"raised": 0}

    def wrapped(self, *args, **kwargs):
        if not state["raised"] and when(self, args):
            state["raised"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapped)
    return state


def _full(self, batch) -> bool:
    return len(batch) > 1 and self.micro.splits == 1


def _backward_of(part: str):
    # manual_backward(loss): D's backward runs while only D's parameters require gradients.
    def when(self, args):
        d_training = any(p.requires_grad for p in self.net_d.parameters())
        g_training = any(p.requires_grad for p in self.net_g.parameters())
        return self.micro.splits == 1 and (d_training and not g_training if part == "d" else g_training)

    return when


PHASES = {
    "generator forward": (S2Module, "_generator_forward", lambda self, a: _full(self, a[0])),
    "discriminator loss": (S2Module, "_compute_loss", lambda self, a: a[1] == "d" and self.micro.splits == 1),
    "discriminator backward": (S2Module, "manual_backward", _backward_of("d")),
    "generator loss (after the D step)": (S2Module, "_compute_loss",
                                          lambda self, a: a[1] == "g" and self.micro.splits == 1),
    "generator backward": (S2Module, "manual_backward", _backward_of("g")),
    "after the G step (EMA update)": (EMA, "update", lambda self, a: True),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_s2_oom_anywhere_in_the_gan_step_recovers(dataset, tmp_path, monkeypatch, phase):
    cls, name, when = PHASES[phase]
    injected = _oom_once(monkeypatch, cls, name, when)
    r = train_s2(dataset, tmp_path / "run", config=TINY_S2, overrides=S2_ARGS, progress=False)
    assert injected["raised"] == 1 and r.last_epoch == 1
    state = read_checkpoint(next((tmp_path / "run" / "s2" / "checkpoints").glob("epoch=0001-*.ckpt")))
    assert state["gsvkit"]["splits"] == 2  # halved micro-batch; the loader batch (2) is kept by accumulation
    assert r.opt_steps == 3  # one G step per loader batch (6 training clips, batch 2) ...
    assert r.global_step == 2 * r.opt_steps  # ... and exactly one D step per loader batch


def test_s1_oom_after_the_optimizer_step_does_not_step_twice(dataset, tmp_path, monkeypatch):
    injected = _oom_once(monkeypatch, EMA, "update", lambda self, a: True)
    r = train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False,
                 overrides=["train.epochs=1", "train.batch_size=2", "train.ema.enabled=true"])
    assert injected["raised"] == 1
    assert r.opt_steps == r.global_step == 3  # one step per loader batch (6 training clips, batch 2)
    state = read_checkpoint(next((tmp_path / "run" / "s1" / "checkpoints").glob("epoch=0001-*.ckpt")))
    assert state["gsvkit"]["splits"] == 2


@pytest.mark.parametrize("phase", ["forward", "after-d-step"])
def test_ddp_oom_on_one_rank_backs_off_on_both(dataset, tmp_path, phase):
    """Two CPU processes (gloo); rank 1 alone runs out of memory (before any step, or after D stepped): both ranks
    agree before the next gradient collective, both halve the micro-batch, nobody blocks, and each optimizer still
    steps once per loader batch. Without the agreement rank 0 waits forever in its gradient all-reduce."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = Path(__file__).parent / "ddp_oom_run.py"
    res = subprocess.run([sys.executable, str(script), str(dataset), str(out), phase], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["oom_events"] == [1, 1]  # rank 0 backed off with its peer, rank 1 from its own OOM
    state = read_checkpoint(next((out / "s2" / "checkpoints").glob("epoch=0001-*.ckpt")))
    assert state["gsvkit"]["splits"] == 2  # the loader batch (2) is kept by accumulating two halves
    # 6 training clips over 2 ranks with batch 2: 2 loader batches per rank (the sampler pads), one G and one D
    # step each, none repeated after the OOM.
    assert result["opt_steps"] == 2 and result["global_step"] == 4
