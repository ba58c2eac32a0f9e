"""s2 (SoVITS GAN) training end to end on the tiny config: from scratch with every regularisation switch on,
resume equal to an uninterrupted run, from a pretrained export, and (on a GPU) fp16 with OOM backoff."""

from __future__ import annotations

import pytest
import torch

from gsvkit.checkpoint import load_checkpoint, load_s2, save_checkpoint
from gsvkit.config import load_config
from gsvkit.errors import CheckpointError
from gsvkit.models.s2 import SynthesizerTrn
from gsvkit.training.callbacks import read_checkpoint
from gsvkit.training.fit import train_s2
from train_helpers import TINY_S2, toy_dataset

pytestmark = pytest.mark.slow

BASE = ["train.batch_size=2", "train.min_items_per_epoch=0", "train.log_every_n_steps=1", "train.val_audio_samples=1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return toy_dataset(tmp_path_factory.mktemp("s2data"), n_utts=8, n_speakers=2)


SWITCHES = ["train.ema.enabled=true", "train.spec_augment.ssl=true", "train.spec_augment.spec=true",
            "train.mixup.enabled=true", "train.kl_anneal_steps=3", "train.grad_clip=10.0",
            "train.freeze.modules=[enc_p.text_embedding]", "train.freeze.unfreeze_at_epoch=1"]


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    """Two epochs with every switch on, watching what the augmentations did and the weights training started from."""
    import gsvkit.training.s2_module as s2m

    out = tmp_path_factory.mktemp("s2full")
    seen: dict = {"masked": set(), "mixed": 0, "init": None}

    def spy_augment(x, lengths, cfg):
        y = s2m.__dict__["_real_spec_augment"](x, lengths, cfg)
        if not torch.equal(x, y):
            seen["masked"].add("spec" if x.shape[1] == 129 else "ssl")
        return y

    def spy_mixup(ssl, speakers, cfg):
        y = s2m.__dict__["_real_speaker_mixup"](ssl, speakers, cfg)
        seen["mixed"] += int(not torch.equal(ssl, y))
        return y

    def on_train_start(self):
        seen["init"] = {k: v.detach().clone() for k, v in self.net_g.state_dict().items()}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(s2m, "_real_spec_augment", s2m.spec_augment, raising=False)
        mp.setattr(s2m, "_real_speaker_mixup", s2m.speaker_mixup, raising=False)
        mp.setattr(s2m, "spec_augment", spy_augment)
        mp.setattr(s2m, "speaker_mixup", spy_mixup)
        mp.setattr(s2m.S2Module, "on_train_start", on_train_start, raising=False)
        r = train_s2(dataset, out, config=TINY_S2, overrides=BASE + SWITCHES + ["train.epochs=2"], progress=False)
    return out, r, seen


def test_s2_trains_with_regularisation_and_exports(full_run):
    out, r, _ = full_run
    assert r.last_epoch == 2 and [e for e, _ in r.val_curve] == [1, 2]
    assert r.monitor == "val/mel_l1" and all(v > 0 for _, v in r.val_curve)
    ck = load_checkpoint(r.export)
    assert ck.kind == "s2" and not any(k.startswith("enc_q.") for k in ck.state_dict)
    assert {"val/mel_l1", "val/recon_mel_l1"} <= set(ck.info["val_metrics"]) and ck.info["epoch"] == r.best_epoch
    g = load_s2(r.export)
    codes = torch.randint(0, 64, (1, 1, 10))
    wav = g.decode(codes, torch.tensor([[1, 2, 3]]), [torch.rand(1, 129, 40)])
    assert wav.shape == (1, 1, 10 * 2 * 64) and torch.isfinite(wav).all()
    rows = (out / "s2" / "logs" / "csv" / "v00" / "metrics.csv").read_text()
    for name in ("train/g/mel_l1", "train/d/total", "train/grad_norm_g", "train/grad_norm_d", "lr/g", "val/mel_l1"):
        assert name in rows, name
    assert list((out / "s2" / "logs" / "tb").rglob("events.out.tfevents.*"))
    state = read_checkpoint(r.best_checkpoint)
    assert any(k.startswith("ema.") for k in state["state_dict"])  # EMA travels in checkpoints
    assert len(state["optimizer_states"]) == 2 and len(state["lr_schedulers"]) == 2
    # Text modules train at 0.4x the base rate (upstream), after the exponential decay of one epoch.
    groups = state["optimizer_states"][0]["param_groups"]
    assert groups[1]["lr"] == pytest.approx(groups[0]["lr"] * 0.4)


def test_s2_regularisers_act(full_run):
    out, r, seen = full_run
    assert seen["masked"] == {"ssl", "spec"}  # SpecAugment masked both inputs
    assert seen["mixed"] > 0  # mixup mixed another speaker's features in (two speakers)
    import csv

    rows = list(csv.DictReader((out / "s2" / "logs" / "csv" / "v00" / "metrics.csv").open()))
    kl = [float(row["train/g/kl_weight"]) for row in rows if row.get("train/g/kl_weight")]
    assert kl[0] < kl[-1] == pytest.approx(1.0)  # annealed up to c_kl over kl_anneal_steps=3
    assert all(a <= b for a, b in zip(kl, kl[1:], strict=False))
    # Frozen enc_p.text_embedding for epoch 1, trained again from epoch 2 (unfreeze_at_epoch=1).
    epochs = sorted((out / "s2" / "checkpoints").glob("epoch=*.ckpt"))
    key = "enc_p.text_embedding.weight"
    first, second = (read_checkpoint(p)["state_dict"]["net_g." + key] for p in epochs[:2])
    assert torch.equal(first, seen["init"][key]) and not torch.equal(second, first)
    other = "dec.conv_post.weight"
    assert not torch.equal(read_checkpoint(epochs[0])["state_dict"]["net_g." + other], seen["init"][other])


def test_s2_resume_equals_uninterrupted(dataset, full_run, tmp_path):
    """One epoch, then --resume for the second: the same weights, optimizer state and validation curve."""
    out, a, _ = full_run
    b1 = train_s2(dataset, tmp_path / "b", config=TINY_S2, overrides=BASE + SWITCHES + ["train.epochs=1"],
                  progress=False)
    assert b1.last_epoch == 1
    b = train_s2(dataset, tmp_path / "b", resume=True, overrides=["train.epochs=2"], progress=False)
    assert a.global_step == b.global_step and a.val_curve == b.val_curve

    def last(run_dir):
        return read_checkpoint(sorted((run_dir / "s2" / "checkpoints").glob("epoch=*.ckpt"))[-1])

    sa, sb = last(out), last(tmp_path / "b")
    for k in sa["state_dict"]:
        assert torch.equal(sa["state_dict"][k], sb["state_dict"][k]), k
    for oa, ob in zip(sa["optimizer_states"], sb["optimizer_states"], strict=True):
        for ta, tb in zip(oa["state"].values(), ob["state"].values(), strict=True):
            assert torch.equal(ta["exp_avg_sq"], tb["exp_avg_sq"])


def test_s2_from_a_pretrained_export(dataset, tmp_path):
    cfg = load_config(TINY_S2)
    torch.manual_seed(0)
    g = SynthesizerTrn(cfg.model)
    export = tmp_path / "pre.safetensors"
    save_checkpoint(export, {k: v for k, v in g.state_dict().items() if not k.startswith("enc_q.")}, cfg, {})
    r = train_s2(dataset, tmp_path / "run", pretrained=export, progress=False,
                 overrides=BASE + ["train.epochs=1"])
    assert r.export and load_checkpoint(r.export).config.model == cfg.model
    with pytest.raises(CheckpointError, match="v1"):
        train_s2(dataset, tmp_path / "bad", pretrained=export, config=TINY_S2, progress=False,
                 overrides=BASE + ["model.version=v1", "model.n_symbols=732"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_s2_fp16_and_oom_backoff_on_gpu(dataset, tmp_path, monkeypatch):
    from gsvkit.training.s2_module import S2Module

    real = S2Module._generator_forward
    seen = []

    def oom_on_full_batch(self, batch):
        seen.append(len(batch))
        if len(batch) > 1 and self.training:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated on the device)")
        return real(self, batch)

    monkeypatch.setattr(S2Module, "_generator_forward", oom_on_full_batch)
    r = train_s2(dataset, tmp_path / "run", config=TINY_S2, accelerator="gpu", progress=False,
                 overrides=BASE + ["train.epochs=1", "train.precision=16-mixed"])
    assert r.export and 2 in seen and 1 in seen
    state = read_checkpoint(r.best_checkpoint)
    assert state["gsvkit"]["splits"] == 2
    assert "scale" in state["StepScaledPrecision"]  # fp16 with loss scaling, its state in the checkpoint
