"""v4 LoRA fine-tuning (tiny config): early stopping, resume, merged + adapter exports; the result speaks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gsvkit.cli import app
from train_helpers import toy_dataset

pytestmark = pytest.mark.slow  # a few epochs of LoRA training on CPU: about two minutes
runner = CliRunner()
TINY_V4 = Path(__file__).parents[1] / "configs" / "tiny" / "s2-v4.yaml"
ARGS = ["-c", str(TINY_V4), "-q", "--accelerator", "cpu", "--lora-rank", "4", "--set", "train.batch_size=4",
        "--set", "train.learning_rate=0.003", "--set", "train.min_items_per_epoch=8"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("v4lora")
    ds = toy_dataset(root, n_utts=8)
    out = root / "exp"
    extra = [
        "--set",
        "train.epochs=6",
        "--set",
        "train.early_stopping.patience=1",
        "--set",
        "train.early_stopping.min_delta=10",
    ]  # fmt: skip  -- no epoch can improve by 10: stops early
    r = runner.invoke(app, ["train", "s2", str(ds), "--out", str(out), *ARGS, *extra])
    assert r.exit_code == 0, r.output
    return {"root": root, "ds": ds, "out": out, "output": r.output}


def test_lora_run_stops_early_and_exports(run):
    from gsvkit.checkpoint import load_s2, read_header

    s2 = run["out"] / "s2"
    summary = json.loads((s2 / "summary.json").read_text())
    assert "early stopping" in summary["stop_reason"] and summary["last_epoch"] < 6
    assert summary["val_curve"] and all(np.isfinite(v) for _, v in summary["val_curve"])
    merged = load_s2(s2 / "s2.safetensors")
    adapters = s2 / "s2-lora-r4.pth"
    assert adapters.read_bytes()[:2] == b"04"  # upstream's v4 LoRA header
    header = read_header(adapters)
    assert header.info["lora_rank"] == 4 and header.version == "v4"
    names = list(header.tensors)
    assert any(".to_out.0.lora_A." in n for n in names) and any(n.startswith("wns1.") for n in names)
    assert not any(n.startswith(("enc_p.", "quantizer.")) for n in names)
    assert merged.version == "v4" and merged.cfm.estimator.transformer_blocks[0].attn.to_q.weight.shape[0] == 32


def test_exported_voice_speaks(run):
    import soundfile as sf

    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import load_config
    from gsvkit.inference.pipeline import TTS
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.vocoders import v4_vocoder
    from tiny import build_hubert, speechlike

    root = run["root"]
    c1 = load_config(Path(__file__).parents[1] / "configs" / "tiny" / "s1.yaml")
    save_checkpoint(root / "s1.safetensors", Text2SemanticDecoder(c1.model).state_dict(), c1, {})
    torch.save(v4_vocoder().state_dict(), root / "vocoder.pth")
    sf.write(root / "ref.wav", speechlike(3.0, sr=32000), 32000)
    r = runner.invoke(app, [
        "voice", "create", str(root / "voice"), "--s1", str(root / "s1.safetensors"),
        "--s2", str(run["out"] / "s2" / "s2.safetensors"), "--ref", str(root / "ref.wav"),
        "--ref-text", "Hello, this is Vera.", "--ref-lang", "en", "--consent", "synthetic test voice",
        "--hubert", str(build_hubert(root / "hubert")), "--vocoder", str(root / "vocoder.pth"),
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    sr, audio = TTS(root / "voice").synthesize("Hello.", "en", seed=1, max_new_tokens=6, sample_steps=2)
    assert sr == 48000 and audio.size > 0 and np.isfinite(audio).all()


def test_resume_continues_the_run(run, tmp_path):
    s2 = run["out"] / "s2"
    before = sorted(p.name for p in (s2 / "checkpoints").glob("epoch=*.ckpt"))
    assert before
    r = runner.invoke(app, ["train", "s2", str(run["ds"]), "--out", str(run["out"]), *ARGS, "--resume",
                            "--set", "train.epochs=7", "--set", "train.early_stopping.enabled=false"])  # fmt: skip
    assert r.exit_code == 0, r.output
    after = sorted(p.name for p in (s2 / "checkpoints").glob("epoch=*.ckpt"))
    assert after != before and json.loads((s2 / "summary.json").read_text())["last_epoch"] >= 6
