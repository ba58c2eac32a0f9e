"""v2Pro / v2ProPlus data and training with tiny models: the prepare stage for speaker embeddings (resumable),
s2 training from Pro weights (validation on the inference path, resume, export) and datasets that lack embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from gsvkit.checkpoint import load_checkpoint, load_s2, save_checkpoint
from gsvkit.config import load_config
from gsvkit.data.manifest import read_manifest
from gsvkit.data.prepare import prepare
from gsvkit.data.prepare_config import PrepareConfig
from gsvkit.errors import DataError
from gsvkit.models.s2 import SynthesizerTrn
from gsvkit.models.sv import SpeakerEncoder
from gsvkit.training.fit import train_s2
from gsvkit.training.toy_data import make_toy_dataset
from test_inference_pipeline import speechlike
from test_prepare import fake_text
from test_pro_inference import TINY_SV, build_sv

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "tiny"
BASE = ["train.batch_size=2", "train.min_items_per_epoch=0", "train.log_every_n_steps=1", "train.val_audio_samples=1"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_prepare_stores_speaker_embeddings_and_resumes(tmp_path):
    from gsvkit.audio.io import load_audio, resample

    inp = tmp_path / "in"
    inp.mkdir()
    lines = []
    for i, name in enumerate(("a", "b")):
        sf.write(inp / f"{name}.wav", speechlike(1.5 + i, sr=22050, seed=i), 22050)
        lines.append(f"{name}.wav|spk|en|hello number {i}")
    (tmp_path / "meta.list").write_text("\n".join(lines) + "\n")
    sv_path = build_sv(tmp_path / "sv.ckpt")
    cfg = PrepareConfig(inputs=[str(inp), str(tmp_path / "meta.list")], out=str(tmp_path / "ds"), sv=str(sv_path),
                        sample_rate=32000)  # fmt: skip
    first = prepare(cfg, text_fn=fake_text)
    assert first.report.computed["sv"] == 2
    sv = SpeakerEncoder.from_upstream_state_dict(torch.load(sv_path, weights_only=True))
    for u in read_manifest(tmp_path / "ds"):
        emb = load_file(str(u.feature_path(tmp_path / "ds", "sv")))["sv"]
        assert emb.shape == (1, TINY_SV.dim)
        # as upstream: the prepared 32 kHz clip, resampled to 16 kHz, through the encoder
        wav = resample(load_audio(tmp_path / "ds" / u.clip), 32000, 16000)
        torch.testing.assert_close(emb, sv.embed(torch.from_numpy(wav)[None]))
    again = prepare(cfg, text_fn=fake_text)
    assert again.report.computed.get("sv", 0) == 0 and again.report.reused["sv"] == 2
    other = build_sv(tmp_path / "sv2.ckpt", seed=1)  # another sv model: every embedding is recomputed
    third = prepare(cfg.model_copy(update={"sv": str(other)}), text_fn=fake_text)
    assert third.report.computed["sv"] == 2


def _pro_dataset(root: Path, cfg, with_sv: bool = True) -> Path:
    ds = make_toy_dataset(root, cfg, n_utts=6, n_speakers=1, seconds=(0.6, 1.0))
    if with_sv:
        g = torch.Generator().manual_seed(0)
        for u in read_manifest(ds):
            save_file({"sv": torch.randn(1, cfg.model.sv_dim, generator=g)}, str(u.feature_path(ds, "sv")))
    return ds


@pytest.mark.slow
@pytest.mark.parametrize("version", ["v2Pro", "v2ProPlus"])
def test_s2_trains_from_pro_weights_resumes_and_exports(version, tmp_path):
    tiny = CONFIGS / f"s2-{version}.yaml"
    cfg = load_config(tiny)
    ds = _pro_dataset(tmp_path / "ds", cfg)
    torch.manual_seed(0)
    pre = tmp_path / "pre.safetensors"  # a pretrained G: enc_q included, as upstream's s2Gv2Pro*.pth
    save_checkpoint(pre, SynthesizerTrn(cfg.model).state_dict(), cfg, {})
    r1 = train_s2(ds, tmp_path / "run", pretrained=pre, progress=False, overrides=BASE + ["train.epochs=1"])
    assert r1.last_epoch == 1 and len(r1.val_curve) == 1 and r1.val_curve[0][1] > 0
    r = train_s2(ds, tmp_path / "run", resume=True, progress=False, overrides=["train.epochs=2"])
    assert r.last_epoch == 2 and [e for e, _ in r.val_curve] == [1, 2]
    ck = load_checkpoint(r.export)
    assert ck.version == version and "sv_emb.weight" in ck.state_dict
    before = SynthesizerTrn.from_upstream_state_dict(load_checkpoint(pre).state_dict, version, config=cfg.model)
    assert not torch.equal(ck.state_dict["sv_emb.weight"], before.sv_emb.weight)  # the sv branch trains too
    g = load_s2(r.export)
    wav = g.decode(torch.randint(0, 64, (1, 1, 8)), torch.tensor([[1, 2, 3]]), [torch.rand(1, 129, 40)],
                   sv_emb=[torch.randn(1, cfg.model.sv_dim)])  # fmt: skip
    assert wav.shape == (1, 1, 8 * 2 * 64) and torch.isfinite(wav).all()


def test_v2_dataset_for_pro_training_names_the_missing_stage(tmp_path):
    cfg = load_config(CONFIGS / "s2-v2Pro.yaml")
    ds = _pro_dataset(tmp_path / "ds", cfg, with_sv=False)
    with pytest.raises(DataError, match=r"speaker embedding .*\.sv\.safetensors is missing.*--sv-model"):
        train_s2(ds, tmp_path / "run", config=CONFIGS / "s2-v2Pro.yaml", progress=False,
                 overrides=BASE + ["train.epochs=1"])  # fmt: skip
    u = read_manifest(ds)[0]
    save_file({"sv": torch.zeros(1, 7)}, str(u.feature_path(ds, "sv")))
    for v in read_manifest(ds)[1:]:
        save_file({"sv": torch.zeros(1, cfg.model.sv_dim)}, str(v.feature_path(ds, "sv")))
    with pytest.raises(DataError, match="a 7-d speaker embedding but the model takes 64"):
        train_s2(ds, tmp_path / "run2", config=CONFIGS / "s2-v2Pro.yaml", progress=False,
                 overrides=BASE + ["train.epochs=1"])  # fmt: skip
