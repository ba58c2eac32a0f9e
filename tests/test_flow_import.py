"""Official-format v3/v4 files import: full SoVITS files, LoRA files merged into their base, and the vocoders."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gsvkit.checkpoint import load_checkpoint, load_s2, load_vocoder_file, read_header
from gsvkit.cli import app
from gsvkit.config import FlowDecoderConfig, official_config
from gsvkit.errors import CheckpointError
from gsvkit.models.s2.flow import SynthesizerTrnV3
from gsvkit.models.vocoders import v4_vocoder

FLOW = FlowDecoderConfig(dim=32, depth=2, heads=1, dim_head=64, ff_mult=2, conv_layers=1, bridge_channels=32)
# What upstream's config carries; the rest (ssl 768, codebook 1024, MRTE 512) is fixed upstream, so official here.
UPSTREAM_MODEL = {"inter_channels": 16, "hidden_channels": 16, "filter_channels": 32, "n_heads": 2, "n_layers": 2,
                  "gin_channels": 16, "version": "v4"}  # fmt: skip
RANK = 4


def _cfg(version: str = "v4"):
    base = official_config("s2", version).model
    update = {k: v for k, v in UPSTREAM_MODEL.items() if k != "version"}
    return base.model_copy(update={**update, "flow": FLOW})


def _save(obj, path: Path, header: bytes | None = None) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    path.write_bytes(header + data[2:] if header else data)  # upstream's my_save2: the tag replaces "PK"
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flow_files")
    torch.manual_seed(0)
    model = SynthesizerTrnV3(_cfg())
    for p in model.parameters():  # non-trivial values everywhere (zero-init gates would hide a wrong merge)
        p.data.normal_(0, 0.05)
    full = {k: v.half() for k, v in model.state_dict().items()}
    hps = {"model": UPSTREAM_MODEL, "data": {"sampling_rate": 32000, "filter_length": 2048, "hop_length": 640}}
    out = {"model": model}
    out["full"] = _save({"weight": full, "info": "pretrained_s2G_v4", "config": hps}, d / "s2Gv4.pth")
    lora = {}
    for i in range(FLOW.depth):
        for t in ("to_q", "to_k", "to_v", "to_out.0"):
            stem = f"cfm.base_model.model.estimator.transformer_blocks.{i}.attn.{t}"
            w = model.state_dict()[f"cfm.estimator.transformer_blocks.{i}.attn.{t}.weight"]
            lora[f"{stem}.lora_A.default.weight"] = torch.randn(RANK, w.shape[1]).half()
            lora[f"{stem}.lora_B.default.weight"] = torch.randn(w.shape[0], RANK).half()
    lora["bridge.0.weight"] = torch.randn_like(model.bridge[0].weight).half()
    out["lora_sd"] = lora
    lora_obj = {"weight": lora, "config": hps, "info": "3epoch_12iteration", "lora_rank": RANK}
    out["lora"] = _save(lora_obj, d / "voice_e3_s12_l4.pth", header=b"04")
    v2 = official_config("s2", "v2")
    out["v2_full"] = _save({"weight": {"enc_p.text_embedding.weight": torch.zeros(732, 4)}, "info": "x"}, d / "v2.pth")
    assert v2.model.version == "v2"
    voc = v4_vocoder()
    out["vocoder_model"] = voc
    out["vocoder"] = _save(voc.state_dict(), d / "vocoder.pth")
    out["bigvgan"] = _save({"generator": {"conv_pre.weight_g": torch.ones(4, 1, 1), "activation_post.act.alpha":
                                          torch.zeros(4)}}, d / "bigvgan_generator.pt")  # fmt: skip
    return out


def test_full_v4_file_imports_with_sizes_from_the_weights(files):
    header = read_header(files["full"])
    assert (header.kind, header.version, header.source_format) == ("s2", "v4", "s2-pretrained-G")
    assert header.config.model.flow == FLOW and header.config.model.hidden_channels == 16
    model = load_s2(files["full"])
    assert isinstance(model, SynthesizerTrnV3) and model.version == "v4"
    for k, v in files["model"].state_dict().items():
        assert torch.equal(model.state_dict()[k], v.half().float()), k


def test_lora_file_needs_its_base(files):
    with pytest.raises(CheckpointError, match=r"v4 LoRA file.*pretrained_models/gsv-v4-pretrained/s2Gv4\.pth"):
        load_s2(files["lora"])
    with pytest.raises(CheckpointError, match="needs a full v4 SoVITS base model"):
        load_s2(files["lora"], base=files["v2_full"])
    header = read_header(files["lora"])
    assert (header.version, header.info["lora_rank"], header.source_format) == ("v4", RANK, "s2-lora")


def test_lora_is_merged_at_load(files):
    merged = load_s2(files["lora"], base=files["full"]).state_dict()
    base = files["model"].state_dict()
    lora = files["lora_sd"]
    for i in range(FLOW.depth):
        for t in ("to_q", "to_out.0"):
            stem = f"cfm.base_model.model.estimator.transformer_blocks.{i}.attn.{t}"
            a, b = lora[f"{stem}.lora_A.default.weight"].float(), lora[f"{stem}.lora_B.default.weight"].float()
            key = f"cfm.estimator.transformer_blocks.{i}.attn.{t}.weight"
            expect = base[key].half().float() + b @ a  # alpha = rank: scale 1
            assert torch.allclose(merged[key], expect, atol=1e-5), key
    assert torch.equal(merged["bridge.0.weight"], lora["bridge.0.weight"].float())
    assert torch.equal(merged["wns1.pre.weight"], base["wns1.pre.weight"].half().float())


def test_gsv_convert_and_info_know_v4_lora(files, tmp_path):
    out = tmp_path / "voice_s2.safetensors"
    runner = CliRunner()
    res = runner.invoke(app, ["convert", str(files["lora"]), str(out)])
    assert res.exit_code != 0 and "--base" in res.output and not out.exists()
    res = runner.invoke(app, ["convert", str(files["lora"]), str(out), "--base", str(files["full"])])
    assert res.exit_code == 0, res.output
    assert "s2 v4" in res.output
    res = runner.invoke(app, ["info", str(out), "--json"])
    summary = json.loads(res.output)
    assert summary["version"] == "v4" and summary["info"]["lora_rank"] == RANK
    converted = load_s2(out).state_dict()
    merged = load_s2(files["lora"], base=files["full"]).state_dict()
    key = "cfm.estimator.transformer_blocks.1.attn.to_v.weight"
    assert torch.equal(converted[key], merged[key])
    res = runner.invoke(app, ["info", str(files["lora"]), "--json"])
    assert json.loads(res.output)["info"]["lora_base"] == "gsv-v4-pretrained/s2Gv4.pth"


def test_vocoder_files(files):
    voc = load_vocoder_file(files["vocoder"])
    mel = torch.randn(1, 100, 5)
    with torch.no_grad():
        assert torch.equal(voc(mel), files["vocoder_model"](mel))
    assert voc(mel).shape[-1] == 5 * 480
    assert (read_header(files["bigvgan"]).kind, read_header(files["bigvgan"]).version) == ("vocoder", "v3")
    with pytest.raises(CheckpointError, match="BigVGAN"):
        load_vocoder_file(files["bigvgan"])  # a truncated BigVGAN: the layout check names what is missing
    with pytest.raises(CheckpointError, match="vocoder"):
        load_s2(files["vocoder"])
    assert load_checkpoint(files["vocoder"]).kind == "vocoder"
