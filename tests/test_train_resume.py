"""Process-level guarantees: a run killed with SIGKILL at a random moment and resumed ends with exactly the weights
of an uninterrupted run; DDP with two CPU processes (gloo) trains and its checkpoint resumes on one process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from gsvkit.training.callbacks import read_checkpoint
from train_helpers import TINY_S1, TINY_S2, toy_dataset

pytestmark = pytest.mark.slow

ARGS = ["--set", "train.batch_size=2", "--set", "train.early_stopping.enabled=false",
        "--set", "train.deterministic=true"]


def _cmd(stage: str, dataset, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gsvkit.cli", "train", stage, str(dataset), "--out", str(out), "-q",
            "--accelerator", "cpu", *extra]


def _env() -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # the same arithmetic in every process
    env.setdefault("PYTHONPATH", "")
    return env


def _last_state(out, stage="s1") -> dict:
    ckpts = sorted((out / stage / "checkpoints").glob("epoch=*.ckpt"))
    return read_checkpoint(ckpts[-1])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("resume"), n_utts=10)


def _seconds_per_epoch(out, stage="s1") -> float:
    """From the checkpoint files' modification times: how long one epoch of this run took."""
    stamps = sorted(
        (int(p.name.split("=")[1].split("-")[0]), p.stat().st_mtime)
        for p in (out / stage / "checkpoints").glob("epoch=*.ckpt")
    )
    rates = [(t2 - t1) / (e2 - e1) for (e1, t1), (e2, t2) in zip(stamps, stamps[1:], strict=False) if e2 > e1]
    return min(rates) if rates else 0.1


def test_sigkill_at_a_random_moment_then_resume_equals_uninterrupted(dataset, tmp_path):
    epochs = ["--set", "train.epochs=8"]
    ref = tmp_path / "ref"
    subprocess.run(_cmd("s1", dataset, ref, "-c", str(TINY_S1), *ARGS, *epochs), check=True, env=_env(),
                   capture_output=True)
    epoch_seconds = _seconds_per_epoch(ref)
    rng = random.Random(os.getpid())
    kill_after_epoch = rng.randint(1, 5)  # epochs count from 1: three or more are still to come at the kill
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd("s1", dataset, run, "-c", str(TINY_S1), *ARGS, *epochs), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = run / "s1" / "checkpoints"
    deadline = time.time() + 600
    while not list(ckpt_dir.glob(f"epoch={kill_after_epoch:04d}-*.ckpt")) and time.time() < deadline:
        assert proc.poll() is None, "the training process ended before it could be killed"
        time.sleep(0.01)
    # A random moment inside the next epoch (mid-step, mid-save or between steps).
    time.sleep(rng.uniform(0.0, epoch_seconds))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "s1" / "summary.json").exists()  # it really died before the end
    subprocess.run(_cmd("s1", dataset, run, "--resume"), check=True, env=_env(), capture_output=True)
    a, b = _last_state(ref), _last_state(run)
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(),
                      strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def test_ddp_two_cpu_processes_then_resume_on_one(dataset, tmp_path):
    out = tmp_path / "ddp"
    res = subprocess.run(_cmd("s1", dataset, out, "-c", str(TINY_S1), "--devices", "2", *ARGS,
                              "--set", "train.epochs=2"), env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    state = _last_state(out)
    assert state["epoch"] == 1 and (out / "s1" / "s1.safetensors").is_file()
    res = subprocess.run(_cmd("s1", dataset, out, "--resume", "--set", "train.epochs=3"), env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _last_state(out)["epoch"] == 2
    assert "epoch 3" in res.stdout


def test_s2_ddp_two_cpu_processes_then_resume_on_one(tmp_path):
    """G and D in one DDP module, two backward passes per step (find_unused_parameters), gloo on CPU."""
    data = toy_dataset(tmp_path, n_utts=8)
    out = tmp_path / "ddp"
    s2 = ["-c", str(TINY_S2), "--set", "train.batch_size=2", "--set", "train.min_items_per_epoch=0"]
    res = subprocess.run(_cmd("s2", data, out, "--devices", "2", *s2, "--set", "train.epochs=1"), env=_env(),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _last_state(out, "s2")["epoch"] == 0 and (out / "s2" / "s2.safetensors").is_file()
    res = subprocess.run(_cmd("s2", data, out, "--resume", "--set", "train.epochs=2"), env=_env(),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _last_state(out, "s2")["epoch"] == 1
