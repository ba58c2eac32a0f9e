"""s2 validation speaker similarity (`val/speaker_sim`): logged, usable as the monitored metric (mode max),
checked in the config, and a clear error when resemblyzer is missing."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from gsvkit.config import ConfigError, load_config
from gsvkit.errors import GsvError
from gsvkit.training.fit import apply_overrides, train_s2
from train_helpers import TINY_S2, toy_dataset

needs_resemblyzer = pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                                       reason="resemblyzer not installed (the eval extra)")

BASE = ["train.batch_size=2", "train.min_items_per_epoch=0", "train.log_every_n_steps=1", "train.val_audio_samples=0",
        "train.epochs=2"]
SIM = ["train.speaker_similarity.enabled=true", "train.speaker_similarity.max_items=2"]
MONITOR = ["train.early_stopping.monitor=val/speaker_sim", "train.early_stopping.mode=max"]


@pytest.fixture
def one_thread():
    # Tiny models on a shared CPU: one thread avoids OpenMP contention stalls (an LSTM step can take seconds).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("simdata"), n_utts=8, n_speakers=1)


@needs_resemblyzer
def test_speaker_sim_is_logged_beside_mel_loss(dataset, tmp_path, one_thread):
    r = train_s2(dataset, tmp_path / "run", config=TINY_S2, overrides=BASE + SIM, progress=False)
    with open(tmp_path / "run" / "s2" / "logs" / "csv" / "v00" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/speaker_sim")]
    values = [float(row["val/speaker_sim"]) for row in rows]
    assert len(values) == 2 and all(-1.0 <= v <= 1.0 for v in values)
    assert all(row["val/mel_l1"] for row in rows)  # beside the mel loss, which stays the default monitor
    assert r.monitor == "val/mel_l1"
    summary = json.loads((tmp_path / "run" / "s2" / "summary.json").read_text())
    assert summary["monitor"] == "val/mel_l1"
    index = json.loads((tmp_path / "run" / "s2" / "checkpoints" / "index.json").read_text())
    assert all(-1.0 <= rec["metrics"]["val/speaker_sim"] <= 1.0 for rec in index["checkpoints"])


@needs_resemblyzer
def test_speaker_sim_as_monitor_keeps_the_highest_epoch(dataset, tmp_path, monkeypatch, one_thread):
    """An untrained tiny model decodes non-speech (every epoch scores the 0.0 floor), so the values the module
    logs are scripted here; the real scoring still runs underneath."""
    from gsvkit.training.speaker_sim import SpeakerSimilarityMetric

    scripted = iter([0.2, 0.7, 0.4])
    real_mean = SpeakerSimilarityMetric.mean

    def mean(self):
        assert -1.0 <= real_mean(self) <= 1.0
        return next(scripted)

    monkeypatch.setattr(SpeakerSimilarityMetric, "mean", mean)
    over = BASE + SIM + MONITOR + ["train.epochs=3", "train.checkpoint.top_k=1", "train.checkpoint.keep_last=1",
                                   "train.checkpoint.schedule=[[null, 100]]"]
    r = train_s2(dataset, tmp_path / "run", config=TINY_S2, overrides=over, progress=False)
    assert r.monitor == "val/speaker_sim" and [e for e, _ in r.val_curve] == [1, 2, 3]
    assert [v for _, v in r.val_curve] == pytest.approx([0.2, 0.7, 0.4])  # logged as float32
    assert r.best_epoch == 2 and r.best_value == pytest.approx(0.7)
    stage = tmp_path / "run" / "s2"
    index = json.loads((stage / "checkpoints" / "index.json").read_text())
    assert index["mode"] == "max" and index["best"].startswith("epoch=0002")
    # Top-1 by the highest value, plus the newest: epoch 1 was rotated away.
    assert sorted(rec["epoch"] for rec in index["checkpoints"]) == [2, 3]
    assert json.loads((stage / "summary.json").read_text())["best_epoch"] == 2


@needs_resemblyzer
def test_speaker_sim_every_n_epochs_and_max_items(one_thread):
    from gsvkit.config import S2Config
    from gsvkit.training.speaker_sim import SILENT_SCORE, SpeakerSimilarityMetric

    cfg = apply_overrides(load_config(TINY_S2), ["train.speaker_similarity.enabled=true",
                                                 "train.speaker_similarity.every_n_epochs=2",
                                                 "train.speaker_similarity.max_items=1"])
    assert isinstance(cfg, S2Config)
    metric = SpeakerSimilarityMetric(cfg.train.speaker_similarity, 16000)
    assert [metric.active(e) for e in (1, 2, 3, 4)] == [False, True, False, True]
    assert metric.wants(0) and not metric.wants(1)
    t = np.arange(16000) / 16000
    voice = (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    assert metric.add("a", voice, voice) == pytest.approx(1.0, abs=1e-5)
    assert metric.add("b", np.zeros(16000, np.float32), voice) == SILENT_SCORE  # silent output: the floor
    assert metric.add("c", voice, np.zeros(16000, np.float32)) is None  # unusable ground truth: left out
    assert metric.mean() == pytest.approx(0.5, abs=1e-5)
    metric.reset()
    with pytest.raises(GsvError, match="c"):
        metric.add("c", voice, np.zeros(16000, np.float32))
        metric.mean()


def test_speaker_sim_config_checks():
    cfg = load_config(TINY_S2)
    assert not cfg.train.speaker_similarity.enabled  # off by default
    with pytest.raises(ConfigError, match="speaker_similarity.enabled"):
        apply_overrides(cfg, MONITOR)
    with pytest.raises(ConfigError, match="mode: max"):
        apply_overrides(cfg, SIM + ["train.early_stopping.monitor=val/speaker_sim"])
    with pytest.raises(ConfigError, match="every_n_epochs: 1"):
        apply_overrides(cfg, SIM + MONITOR + ["train.speaker_similarity.every_n_epochs=2"])
    with pytest.raises(ConfigError, match="train.speaker_similarity.max_items"):
        apply_overrides(cfg, ["train.speaker_similarity.max_items=0"])
    assert apply_overrides(cfg, SIM + MONITOR).train.early_stopping.mode == "max"


def test_speaker_sim_missing_resemblyzer_is_named(tmp_path, monkeypatch):
    ds = toy_dataset(tmp_path, n_utts=4)
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # `import resemblyzer` now raises ImportError
    with pytest.raises(GsvError, match=r"resemblyzer.*pip install 'gsvkit\[eval\]'"):
        train_s2(ds, tmp_path / "run", config=TINY_S2, overrides=BASE + SIM, progress=False)
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # failed before training
