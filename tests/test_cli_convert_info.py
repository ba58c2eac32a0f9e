"""`gsv convert` and `gsv info` on the fixture container samples and on converted files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gsvkit.checkpoint import load_checkpoint
from gsvkit.cli import app

FIX = Path(__file__).resolve().parent / "fixtures/gsv_v2_parity"
EXPECTED = np.load(FIX / "containers_expected.npz")
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("name", "kind", "fmt", "params"),
    [("s2_export_v2.pth", "s2", "s2-export", 1361), ("s1_export.ckpt", "s1", "s1-export", 2050)],
)
def test_info_on_official_files(name, kind, fmt, params):
    res = _invoke("info", FIX / name, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert (data["kind"], data["version"], data["source_format"]) == (kind, "v2", fmt)
    assert (
        data["num_params"]
        == params
        == sum(EXPECTED[k].size for k in EXPECTED.files if k.startswith(name.rsplit(".", 1)[0] + "__"))
    )
    assert data["dtypes"] == {"float16": 4}
    assert data["config"]["kind"] == kind
    text = _invoke("info", FIX / name)
    assert text.exit_code == 0
    for word in (kind, "v2", fmt, f"{params:,}", "training info", "config", "epoch"):
        assert word in text.output


@pytest.mark.parametrize(
    ("name", "fp", "dtype"), [("s2_export_v2.pth", None, torch.float16), ("s1_export.ckpt", "--fp32", torch.float32)]
)
def test_convert_then_info_and_reload(name, fp, dtype, tmp_path):
    out = tmp_path / "model.safetensors"
    args = ["convert", FIX / name, out] + ([fp] if fp else [])
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and out.exists()
    stem = name.rsplit(".", 1)[0]
    ckpt = load_checkpoint(out)
    assert ckpt.source_format == "gsvkit" and ckpt.info["source_format"] in ("s2-export", "s1-export")
    for key in (k for k in EXPECTED.files if k.startswith(stem + "__")):
        ours = key.split("__", 1)[1].removeprefix("model.") if stem.startswith("s1") else key.split("__", 1)[1]
        got = ckpt.state_dict[ours]
        assert got.dtype == dtype
        assert np.array_equal(got.numpy(), EXPECTED[key].astype(got.numpy().dtype))
    info = json.loads(_invoke("info", out, "--json", "--verify").output)
    assert info["source_format"] == "gsvkit" and info["format_version"] == "1" and info["verified"] is True
    assert info["info"]["source_file"].endswith(name)


def test_convert_refuses_to_overwrite(tmp_path):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    res = _invoke("convert", FIX / "s2_export_v2.pth", out)
    assert res.exit_code == 2
    assert "already exists" in res.output and "--overwrite" in res.output
    assert out.read_bytes() == b"keep me"
    res = _invoke("convert", FIX / "s2_export_v2.pth", out, "--overwrite", "--fp16")
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out).kind == "s2"


def test_errors_are_one_line_exit_2(tmp_path):
    v4 = tmp_path / "v4_lora.pth"  # upstream's v4 LoRA tag over a real export
    v4.write_bytes(b"04" + (FIX / "s2_export_v2.pth").read_bytes()[2:])
    res = _invoke("info", v4)
    assert res.exit_code == 2
    assert "v4-LoRA" in res.output and "Traceback" not in res.output
    res = _invoke("convert", v4, tmp_path / "x.safetensors")
    assert res.exit_code == 2 and "v4-LoRA" in res.output
    assert not (tmp_path / "x.safetensors").exists()
    cut = tmp_path / "cut.pth"
    cut.write_bytes((FIX / "s2_export_v2.pth").read_bytes()[:3000])
    res = _invoke("info", cut)
    assert res.exit_code == 2 and "truncated" in res.output
    res = _invoke("info", tmp_path)
    assert res.exit_code == 2 and "directory" in res.output
    res = _invoke("convert", FIX / "s1_export.ckpt", tmp_path / "gpt.pth")
    assert res.exit_code == 2 and "must end in .safetensors" in res.output


def test_info_verify_catches_corruption(tmp_path):
    out = tmp_path / "m.safetensors"
    assert _invoke("convert", FIX / "s1_export.ckpt", out).exit_code == 0
    data = bytearray(out.read_bytes())
    data[-3] ^= 0xFF
    out.write_bytes(bytes(data))
    assert _invoke("info", out).exit_code == 0  # the header alone still reads
    res = _invoke("info", out, "--verify")
    assert res.exit_code == 2 and "checksum mismatch" in res.output


@pytest.mark.slow  # two fresh interpreters importing torch: tens of seconds on a busy machine
def test_gsv_executable(tmp_path):
    gsv = shutil.which("gsv", path=str(Path(sys.executable).parent))
    cmd = [gsv] if gsv else [sys.executable, "-m", "gsvkit.cli"]
    src = tmp_path / "voice.pth"
    shutil.copy(FIX / "s2_export_v2.pth", src)
    out = tmp_path / "voice.safetensors"
    subprocess.run([*cmd, "convert", str(src), str(out)], check=True, capture_output=True, text=True)
    res = subprocess.run([*cmd, "info", str(out), "--json"], check=True, capture_output=True, text=True)
    data = json.loads(res.stdout)
    assert (data["kind"], data["version"], data["num_params"]) == ("s2", "v2", 1361)
