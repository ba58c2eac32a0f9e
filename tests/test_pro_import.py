"""Official-format v2Pro files (upstream's header bytes, pickled HParams config, fp16) import at the official size;
the Pro discriminator is recognised by its periods."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import OrderedDict

import pytest
import torch

from gsvkit.checkpoint import load_checkpoint, load_s2, read_header
from gsvkit.models.s2 import SynthesizerTrn
from parity import CONTAINERS, HPARAMS_SRC, MANIFEST, pro_case, save_torch, synth_param


@pytest.fixture()
def utils(tmp_path, monkeypatch):
    (tmp_path / "utils.py").write_text(HPARAMS_SRC)
    spec = importlib.util.spec_from_file_location("utils", tmp_path / "utils.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "utils", mod)
    return mod


def _pro_hps(version: str) -> dict:
    # upstream's s2v2Pro.json = s2.json with p_dropout 0.0 and gin_channels 1024
    cfg = json.loads(json.dumps(CONTAINERS["s2_export_v2.pth"]["config_as_dict"]))
    cfg["model"].update(version=version, p_dropout=0.0, gin_channels=1024)
    cfg["version"] = version
    return cfg


@pytest.mark.slow
def test_official_size_v2pro_export_imports(utils, tmp_path):
    # What process_ckpt.savee writes for v2Pro: enc_q dropped, fp16, my_save2 with "05" over "PK".
    weight = OrderedDict(
        (k, torch.from_numpy(synth_param(k, s)).half())
        for k, s in MANIFEST["s2_keys_v2Pro"].items()
        if "enc_q" not in k
    )
    export = OrderedDict(weight=weight, config=utils.HParams(**_pro_hps("v2Pro")), info="8epoch_224iteration")
    path = save_torch(export, tmp_path / "voice_e8_s224.pth", header=b"05")
    header = read_header(path)
    assert (header.kind, header.version, header.source_format) == ("s2", "v2Pro", "s2-export-header")
    assert header.config.model.gin_channels == 1024 and header.config.model.p_dropout == 0.0
    assert header.info["epoch"] == 8 and header.info["step"] == 224
    model = load_s2(path)
    assert model.is_pro
    direct = SynthesizerTrn.from_upstream_state_dict(dict(weight), version="v2Pro")
    case = pro_case("s2_decode_v2Pro_case0.npz")
    from gsvkit.audio.spectrogram import spectrogram

    ref = spectrogram(torch.from_numpy(case["refer_wav_0"])[None], header.config.data)
    args = (torch.from_numpy(case["codes"][..., :10]), torch.from_numpy(case["text"][:, :8]), ref)
    emb = torch.from_numpy(case["sv_emb_0"])
    got, expected = (m.decode(*args, noise_scale=0.0, sv_emb=emb) for m in (model, direct))
    assert torch.equal(got, expected)
    ck = load_checkpoint(path)
    assert ck.config.model.version == "v2Pro" and all(v.dtype == torch.float16 for v in ck.state_dict.values())


@pytest.mark.parametrize(("n_discs", "version"), [(6, "v2"), (8, "v2Pro")])
def test_discriminator_version_from_its_periods(tmp_path, n_discs, version):
    # MultiPeriodDiscriminator: one scale discriminator + 5 periods (v2) or 7 periods up to 23 (v2Pro/v2ProPlus)
    weight = {f"discriminators.{i}.conv_post.weight": torch.zeros(1, 2, 3, 1) for i in range(n_discs)}
    path = save_torch({"weight": weight}, tmp_path / "s2D.pth")
    header = read_header(path)
    assert (header.kind, header.version) == ("s2d", version)
