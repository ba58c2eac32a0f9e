"""A full disk anywhere: one line "no space left on …: N MB needed", exit 2, and no partial file."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from gsvkit.audio.io import save_audio
from gsvkit.cli import app
from gsvkit.config import S1Config, save_config
from gsvkit.errors import DiskFullError
from gsvkit.utils.io import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests/fixtures/gsv_v2_parity"
runner = CliRunner()


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _half_then_enospc(path, *_args, **_kwargs):
    Path(path).write_bytes(b"\0" * 3_000_000)  # a partial write, then the disk fills up
    _enospc()


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_convert_on_a_full_disk(tmp_path, monkeypatch):
    import gsvkit.checkpoint.format as fmt

    monkeypatch.setattr(fmt, "write_file", lambda path, *a, **k: _half_then_enospc(path))
    out = tmp_path / "out" / "s2.safetensors"
    result = runner.invoke(app, ["convert", str(FIX / "s2_export_v2.pth"), str(out)])
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"no space left on {out.parent}" in lines[0] and "MB needed" in lines[0]
    assert _only(out.parent) == []  # neither the final file nor the temporary one


def test_atomic_write_names_the_size_it_needed(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_bytes", _enospc)
    with pytest.raises(DiskFullError, match=r"no space left on .*: 5 MB needed to write blob\.bin"):
        atomic_write_bytes(tmp_path / "blob.bin", b"x" * 5_000_000)
    assert _only(tmp_path) == []
    assert isinstance(DiskFullError("x"), OSError)  # callers that catch OSError still do


def test_synth_output_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(sf, "write", lambda path, *a, **k: _half_then_enospc(path))
    with pytest.raises(DiskFullError, match=r"no space left on .*: 3 MB needed to write out\.wav"):
        save_audio(tmp_path / "out.wav", np.zeros(32000, dtype=np.float32), 32000)
    assert _only(tmp_path) == []


def test_config_write_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_bytes", _enospc)
    with pytest.raises(DiskFullError, match="no space left on"):
        save_config(S1Config(), tmp_path / "run" / "config.yaml")
    assert _only(tmp_path / "run") == []


def test_library_errors_that_wrap_enospc_are_recognised(tmp_path, monkeypatch):
    # safetensors (Rust) reports a full disk as its own error type carrying "os error 28".
    import gsvkit.checkpoint.format as fmt

    def rust_style(path, *a, **k):
        Path(path).write_bytes(b"\0" * 10)
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, message: ... }) (os error 28)")

    monkeypatch.setattr(fmt, "write_file", rust_style)
    import torch

    from gsvkit.checkpoint import save_checkpoint

    with pytest.raises(DiskFullError, match=r": 1 MB needed to write x\.safetensors"):
        save_checkpoint(tmp_path / "x.safetensors", {"w": torch.zeros(10)}, S1Config())
    assert _only(tmp_path) == []


def test_voice_create_on_a_full_disk_leaves_no_folder(tmp_path, monkeypatch):
    import shutil

    from gsvkit.inference.voice import create_voice
    from tiny import build_models, speechlike

    s1, s2 = build_models(tmp_path / "models")
    ref = tmp_path / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    voices = tmp_path / "voices"
    monkeypatch.setattr(shutil, "copyfile", lambda src, dst, **k: _half_then_enospc(dst))
    with pytest.raises(DiskFullError, match=rf"no space left on {voices}: \d+ MB needed to write bob"):
        create_voice(voices / "bob", s1=s1, s2=s2, ref_audio=ref, ref_text="Hello there.", ref_lang="en",
                     consent="synthetic test voice")  # fmt: skip
    assert _only(voices) == []  # neither the voice nor its temporary folder


def test_training_config_write_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    from gsvkit.config import load_config
    from gsvkit.training.toy_data import make_toy_dataset

    data = tmp_path / "data"
    make_toy_dataset(data, load_config(ROOT / "configs" / "tiny" / "s2.yaml"), n_utts=4, val_per_speaker=1)
    monkeypatch.setattr(Path, "write_bytes", _enospc)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "s1", str(data), "-o", str(out), "-c",
                                 str(ROOT / "configs" / "tiny" / "s1.yaml")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"no space left on {out / 's1'}" in result.output and "config.yaml" in result.output
    assert not (out / "s1" / "config.yaml").exists()
