"""Training building blocks without a training run: retention policy, resume fallback, early stopping with
smoothing, schedules, EMA, augmentation, OOM backoff, datasets and config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsvkit.config import ConfigError, load_config
from gsvkit.errors import DataError
from gsvkit.training.callbacks import (
    CheckpointPolicy,
    SmoothedEarlyStopping,
    find_resume_checkpoint,
    list_checkpoints,
    on_schedule,
    read_checkpoint,
    select_kept,
)
from gsvkit.training.config import CheckpointConfig, EarlyStoppingConfig
from gsvkit.training.stepping import MicroBatches, is_oom

ROOT = Path(__file__).parents[1]
TINY_S2 = ROOT / "configs" / "tiny" / "s2.yaml"
TINY_S1 = ROOT / "configs" / "tiny" / "s1.yaml"


def test_save_schedule_default():
    sched = CheckpointConfig().schedule
    kept = [e for e in range(1, 71) if on_schedule(e, sched)]
    assert kept == [2, 4, 6, 8, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70]


def test_select_kept_topk_last_and_schedule():
    cfg = CheckpointConfig(top_k=2, keep_last=1, schedule=[(None, 4)])
    scores = [5.0, 3.0, 4.0, 1.0, 2.0, 6.0, float("nan")]
    records = [
        {"name": f"e{i + 1}", "epoch": i + 1, "step": i, "score": s, "scheduled": on_schedule(i + 1, cfg.schedule)}
        for i, s in enumerate(scores)
    ]
    assert select_kept(records, cfg, "min") == {"e4", "e5", "e7"}  # best two, newest, epoch 4 scheduled (=best)
    assert select_kept(records, cfg, "max") >= {"e6", "e1", "e7"}


def _fake_ckpt(path: Path, step: int) -> None:
    torch.save({"state_dict": {"w": torch.full((3,), float(step))}, "global_step": step}, path)


def test_resume_falls_back_and_moves_corrupt_newest_aside(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    _fake_ckpt(d / "epoch=0001-step=0000010.ckpt", 10)
    _fake_ckpt(d / "epoch=0002-step=0000020.ckpt", 20)
    newest = d / "epoch=0003-step=0000030.ckpt"
    _fake_ckpt(newest, 30)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated mid-write
    reports: list[str] = []
    found = find_resume_checkpoint(d, report=reports.append)
    assert found == d / "epoch=0002-step=0000020.ckpt"
    assert read_checkpoint(found)["global_step"] == 20
    assert not newest.exists() and (d / "corrupt" / newest.name).exists()  # moved aside, never deleted
    assert reports and newest.name in reports[0]
    assert [p.name for p in list_checkpoints(d)] == ["epoch=0001-step=0000010.ckpt", "epoch=0002-step=0000020.ckpt"]


def test_resume_with_nothing_readable(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "epoch=0001-step=0000001.ckpt").write_bytes(b"PK\x03\x04garbage")
    assert find_resume_checkpoint(d, report=lambda m: None) is None
    assert (d / "corrupt" / "epoch=0001-step=0000001.ckpt").exists()


class _Trainer:
    """The few attributes early stopping reads."""

    def __init__(self):
        self.callback_metrics = {}
        self.current_epoch = 0
        self.should_stop = False
        self.fast_dev_run = False

        class _S:
            @staticmethod
            def reduce_boolean_decision(x, all=False):
                return x

        self.strategy = _S()


def _run_es(cfg: EarlyStoppingConfig, values: list[float]) -> tuple[SmoothedEarlyStopping, int | None]:
    es = SmoothedEarlyStopping(cfg, "val/loss")
    trainer = _Trainer()
    for epoch, v in enumerate(values):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val/loss": torch.tensor(v)}
        es._run_early_stopping_check(trainer)
        if trainer.should_stop:
            return es, epoch + 1
    return es, None


def test_early_stopping_patience_and_best_epoch():
    es, stopped = _run_es(EarlyStoppingConfig(patience=3), [5, 4, 3, 3.00001, 3.5, 3.2, 1.0])
    assert stopped == 6 and es.best_epoch == 3
    assert es.stopping_reason_message == ("val/loss did not fall by more than min_delta 0.0001 for 3 validation "
                                          "checks in a row (patience 3); best 3 at epoch 3")


def test_progress_bar_numbers_epochs_from_one():
    import types

    from gsvkit.training.callbacks import EpochProgressBar

    bar = EpochProgressBar()
    bar._trainer = types.SimpleNamespace(max_epochs=10)
    assert bar._get_train_description(0).strip() == "Epoch 1/10"  # the first epoch, as in epoch=0001-….ckpt


def test_early_stopping_smoothing_ignores_a_single_spike():
    noisy = [5, 4, 3.5, 9, 3.0, 2.8, 2.7]
    raw, stopped_raw = _run_es(EarlyStoppingConfig(patience=1), noisy)
    smooth, stopped_smooth = _run_es(EarlyStoppingConfig(patience=1, smoothing=0.5), [5, 4, 3.5, 3.6, 3.0, 2.8, 2.7])
    assert stopped_raw == 4
    assert stopped_smooth is None and smooth.best_epoch == 7


def test_early_stopping_stops_on_nan():
    es, stopped = _run_es(EarlyStoppingConfig(), [3.0, float("nan")])
    assert stopped == 2
    assert es.stopping_reason_message == "val/loss was nan at epoch 2, not a finite number (early_stopping.stop_on_nan)"


def test_early_stopping_state_round_trip():
    es, _ = _run_es(EarlyStoppingConfig(patience=5, smoothing=0.3), [3, 2, 2.5])
    again = SmoothedEarlyStopping(EarlyStoppingConfig(patience=5, smoothing=0.3), "val/loss")
    again.load_state_dict(es.state_dict())
    assert again.smoothed == es.smoothed and again.best_epoch == 2 and again.wait_count == 1


def test_checkpoint_policy_state_drops_missing_files(tmp_path):
    p = CheckpointPolicy(tmp_path, CheckpointConfig(), "val/loss")
    (tmp_path / "a.ckpt").write_bytes(b"x")
    p.load_state_dict({"records": [{"name": "a.ckpt", "epoch": 1, "step": 1, "score": 1.0},
                                   {"name": "gone.ckpt", "epoch": 2, "step": 2, "score": 0.5}]})
    assert [r["name"] for r in p.records] == ["a.ckpt"] and p.best["name"] == "a.ckpt"


# ------------------------------------------------------------------------------------------ schedules / EMA
def test_warmup_cosine_shape():
    from gsvkit.training.schedules import warmup_cosine

    f = [warmup_cosine(s, peak=1.0, init=0.1, end=0.01, warmup=10, decay=100) for s in range(0, 200)]
    assert f[0] == pytest.approx(0.1) and f[10] == pytest.approx(1.0)
    assert f[5] == pytest.approx(0.55) and f[60] == pytest.approx(0.505)
    assert all(a >= b for a, b in zip(f[10:-1], f[11:], strict=True)) and f[150] == pytest.approx(0.01)


def test_ema_average_and_swap():
    from gsvkit.training.ema import EMA

    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.5, warmup=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m, step=1)
    assert torch.allclose(ema.averaged_state_dict(m)["weight"], torch.full((2, 2), 0.5))
    with ema.swapped_in(m):
        assert torch.allclose(m.weight, torch.full((2, 2), 0.5))
    assert torch.allclose(m.weight, torch.ones(2, 2))


def test_ema_warmup_follows_early_training():
    """Weights moving 0 -> 1 over 50 steps: with warm-up the average follows them; at a fixed 0.999 it stays at 0."""
    from gsvkit.training.ema import EMA

    m = torch.nn.Linear(2, 2, bias=False)
    averages = {}
    for warmup in (True, False):
        with torch.no_grad():
            m.weight.fill_(0.0)
        ema = EMA(m, decay=0.999, warmup=warmup)
        for step in range(1, 51):
            with torch.no_grad():
                m.weight.fill_(step / 50)
            ema.update(m, step)
        averages[warmup] = float(ema.averaged_state_dict(m)["weight"].mean())
    assert averages[True] > 0.7 and averages[False] < 0.05
    assert EMA(m, decay=0.999).decay_at(100_000) == 0.999  # warm-up ends at the configured decay
    assert EMA(m, decay=0.999, start_step=10).decay_at(5) == 0.0  # plain copies before start_step


def test_spec_augment_masks_inside_lengths():
    from gsvkit.training.augment import speaker_mixup, spec_augment
    from gsvkit.training.config import MixupConfig, SpecAugmentConfig

    torch.manual_seed(0)
    x = torch.ones(3, 20, 50)
    lengths = torch.tensor([50, 30, 10])
    y = spec_augment(x, lengths, SpecAugmentConfig(time_masks=2, time_width=0.3, freq_masks=1, freq_width=0.3))
    assert (y == 0).any() and (y == 1).any()
    for i, n in enumerate(lengths.tolist()):
        # Past an item's length only whole-channel (frequency) masks reach: every padded frame looks the same.
        rows = y[i, :, n:]
        assert torch.equal(rows, rows[:, :1].expand_as(rows)) or n == 50
    # With time masks only, no frame past any length is touched, and some frame inside is.
    t_only = spec_augment(x, lengths, SpecAugmentConfig(time_masks=3, time_width=0.5, freq_masks=0))
    for i, n in enumerate(lengths.tolist()):
        assert bool((t_only[i, :, n:] == 1).all()) and bool((t_only[i, :, :n] == 0).any())
    assert torch.equal(spec_augment(x, lengths, SpecAugmentConfig(time_masks=0, freq_masks=0)), x)
    ssl = torch.stack([torch.zeros(4, 6), torch.ones(4, 6)])
    mixed = speaker_mixup(ssl, ["a", "b"], MixupConfig(enabled=True, prob=1.0, max_weight=0.5))
    assert 0 < float(mixed[0].mean()) <= 0.5
    assert torch.equal(speaker_mixup(ssl, ["a", "a"], MixupConfig(enabled=True, prob=1.0)), ssl)


# ---------------------------------------------------------------------------------------------- OOM backoff
def test_micro_batches_backoff():
    mb = MicroBatches()
    assert mb.slices(5) == [slice(0, 5)]
    assert mb.backoff(5) and mb.slices(5) == [slice(0, 2), slice(2, 5)]
    assert mb.backoff(5) and mb.backoff(5) and mb.splits == 8
    assert [s.stop - s.start for s in mb.slices(5)] == [1, 1, 1, 1, 1]
    assert not mb.backoff(5)  # one item per micro-batch already
    assert not MicroBatches(enabled=False).backoff(8)
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate")) and not is_oom(ValueError("x"))


def test_oom_backoff_keeps_the_gradient(tmp_path, monkeypatch):
    """A simulated OOM on the full batch: the step is redone in halves and the gradient equals the full batch's."""
    from gsvkit.training.datamodule import S1DataModule
    from gsvkit.training.fit import apply_overrides
    from gsvkit.training.s1_module import S1Module
    from train_helpers import toy_dataset

    cfg = apply_overrides(load_config(TINY_S1), ["train.batch_size=4"])
    dm = S1DataModule(toy_dataset(tmp_path), cfg)
    dm.setup()
    batch = dm.collate([dm.train_set[i] for i in range(4)])
    torch.manual_seed(0)
    ref, mod = S1Module(cfg), S1Module(cfg)
    mod.load_state_dict(ref.state_dict())
    grads = []
    for m, fail_above in ((ref, 99), (mod, 2)):
        m.eval()  # no dropout: both runs compute the same function
        real = m._compute_loss
        calls: list[int] = []

        def compute(b, real=real, calls=calls, fail_above=fail_above):
            calls.append(len(b))
            if len(b) > fail_above:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(b)

        monkeypatch.setattr(m, "_compute_loss", compute)
        monkeypatch.setattr(m, "window_ends", lambda: False)  # accumulate only: no optimizer step
        monkeypatch.setattr(m, "manual_backward", lambda loss: loss.backward())
        monkeypatch.setattr(m, "print", lambda *a, **k: None)
        m._batch_targets = float(batch.semantic_lengths.sum() + len(batch))
        m.run_micro_batches(batch, m._micro_step)
        grads.append(torch.cat([p.grad.flatten() for p in m.model.parameters() if p.grad is not None]))
    assert mod.micro.splits == 2 and mod.oom_events == 1 and ref.oom_events == 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------------------- datasets
def test_dataset_errors(tmp_path):
    from gsvkit.data.manifest import read_manifest, write_manifest
    from gsvkit.training.datasets import load_utterances
    from train_helpers import toy_dataset

    root = toy_dataset(tmp_path)
    train, val = load_utterances(root, "s2")
    assert train and val
    items = read_manifest(root)
    write_manifest(root, [u.model_copy(update={"split": "train"}) for u in items])
    with pytest.raises(DataError, match="validation split is empty"):
        load_utterances(root, "s2")
    write_manifest(root, items)
    next(root.glob("features/*.semantic.safetensors")).unlink()
    with pytest.raises(DataError, match="semantic tokens"):
        load_utterances(root, "s1")
    with pytest.raises(DataError, match="not found"):
        load_utterances(tmp_path / "nope", "s1")


def test_bucket_sampler_deterministic_sharded_and_resumable():
    from gsvkit.training.datasets import BucketBatchSampler

    lengths = list(range(40, 0, -1))
    a = BucketBatchSampler(lengths, 4, seed=3)
    a.set_epoch(2)
    full = list(a)
    assert sorted(i for b in full for i in b) == list(range(40))
    assert list(BucketBatchSampler(lengths, 4, seed=3)) != full  # epoch 0 is shuffled differently from epoch 2
    again = BucketBatchSampler(lengths, 4, seed=3)
    again.set_epoch(2)
    assert list(again) == full  # (seed, epoch) decides the order
    r0 = BucketBatchSampler(lengths, 4, seed=3, num_replicas=2, rank=0)
    r1 = BucketBatchSampler(lengths, 4, seed=3, num_replicas=2, rank=1)
    assert len(list(r0)) == len(list(r1)) == 5 and not set(map(tuple, r0)) & set(map(tuple, r1))
    # Resume after 3 batches of epoch 2: the next batches are exactly the remaining ones.
    b = BucketBatchSampler(lengths, 4, seed=3)
    b.load_state_dict({"epoch": 2, "done": 3})
    b.set_epoch(2)
    assert list(b) == full[3:]


def test_config_typo_is_named_and_overrides():
    from gsvkit.training.fit import apply_overrides

    cfg = load_config(TINY_S2)
    cfg2 = apply_overrides(cfg, ["train.early_stopping.patience=2", "train.ema.enabled=true"])
    assert cfg2.train.early_stopping.patience == 2 and cfg2.train.ema.enabled
    with pytest.raises(ConfigError, match="train.early_stoping"):
        apply_overrides(cfg, ["train.early_stoping.patience=2"])
    with pytest.raises(ConfigError, match="train.early_stopping.patience"):
        apply_overrides(cfg, ["train.early_stopping.patience=0"])
