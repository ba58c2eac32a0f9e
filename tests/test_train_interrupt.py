"""Ctrl-C or SIGTERM at any point of an epoch, end-of-epoch validation included, resumes to exactly the weights,
files and validation curve of an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal

import pytest
import torch

from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.fit import TrainingInterrupted, train_s1
from gsvkit.training.s1_module import S1Module
from train_helpers import TINY_S1, toy_dataset

pytestmark = pytest.mark.slow
ARGS = ["train.epochs=4", "train.batch_size=2", "train.early_stopping.enabled=false",
        "train.checkpoint.keep_last=10", "train.stochastic_depth=0.3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("interrupt"), n_utts=8)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return out, train_s1(dataset, out, config=TINY_S1, progress=False, overrides=ARGS)


def _epoch_files(out) -> list[str]:
    return sorted(p.name for p in (out / "s1" / "checkpoints").glob("epoch=*.ckpt"))


def _assert_same_as_reference(reference, out, result) -> None:
    ref_out, ref = reference
    assert _epoch_files(out) == _epoch_files(ref_out)
    assert result.val_curve == ref.val_curve and result.global_step == ref.global_step
    newest = _epoch_files(ref_out)[-1]
    a = read_checkpoint(ref_out / "s1" / "checkpoints" / newest)["state_dict"]
    b = read_checkpoint(out / "s1" / "checkpoints" / newest)["state_dict"]
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def _interrupt(monkeypatch, cls, name: str, at_call: int, action) -> None:
    real = getattr(cls, name)
    calls = {"n": 0}

    def wrapped(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            action()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapped)


def _ctrl_c():
    raise KeyboardInterrupt


def _sigterm():
    os.kill(os.getpid(), signal.SIGTERM)  # Lightning turns it into SIGTERMException at the next step boundary


@pytest.mark.parametrize(
    ("where", "method", "at_call", "action", "message"),
    [
        ("ctrl-c in a training step", "training_step", 5, _ctrl_c, "during epoch 2"),
        ("ctrl-c in validation", "validation_step", 2, _ctrl_c, "end of epoch 2, which is trained again"),
        ("sigterm in a training step", "training_step", 4, _sigterm, "during epoch 2"),
        ("sigterm in validation", "validation_step", 3, _sigterm, "checkpoint is at .*epoch=0003-"),
    ],
)
def test_interrupt_then_resume_equals_uninterrupted(dataset, tmp_path, monkeypatch, reference,
                                                    where, method, at_call, action, message):
    _interrupt(monkeypatch, S1Module, method, at_call, action)
    with pytest.raises(TrainingInterrupted, match="--resume") as stopped:
        train_s1(dataset, tmp_path / "run", config=TINY_S1, progress=False, overrides=ARGS)
    monkeypatch.undo()
    r = train_s1(dataset, tmp_path / "run", resume=True, progress=False)
    _assert_same_as_reference(reference, tmp_path / "run", r)
    assert re.search(message, str(stopped.value))  # says when it happened (1-based epochs)
    assert not list((tmp_path / "run" / "s1" / "checkpoints").glob("*interrupted.ckpt"))  # superseded
