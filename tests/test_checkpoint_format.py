"""gsvkit's own .safetensors checkpoints: round trip, metadata, fp16, atomic saves and integrity errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from gsvkit.checkpoint import Checkpoint, load_checkpoint, read_header, save_checkpoint
from gsvkit.config import load_config
from gsvkit.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def _s2_config():
    return load_config(ROOT / "configs/tiny/s2.yaml")


def _s1_config():
    return load_config(ROOT / "configs/tiny/s1.yaml")


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "enc_p.text_embedding.weight": torch.randn(732, 8, generator=g),
        "dec.conv_post.weight": torch.randn(1, 16, 7, generator=g),
        "quantizer.vq.layers.0._codebook.inited": torch.ones(1),
        "steps": torch.tensor(7, dtype=torch.int64),
        "flags": torch.tensor([True, False]),
        "bf": torch.randn(3, 2, generator=g).to(torch.bfloat16),
    }


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = _state()
    path = save_checkpoint(tmp_path / "m.safetensors", sd, _s2_config(), {"epoch": 3, "step": 120, "val_loss": 1.25})
    return path, sd


def test_round_trip_exact(saved):
    path, sd = saved
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert (ckpt.kind, ckpt.version, ckpt.source_format) == ("s2", "v2", "gsvkit")
    assert ckpt.config == _s2_config()
    assert ckpt.info == {"epoch": 3, "step": 120, "val_loss": 1.25}
    assert set(ckpt.state_dict) == set(sd)
    for k, v in sd.items():
        assert ckpt.state_dict[k].dtype == v.dtype
        assert torch.equal(ckpt.state_dict[k], v), k
    assert ckpt.num_params == sum(v.numel() for v in sd.values())


def test_metadata_is_plain_strings(saved):
    path, sd = saved
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    meta = json.loads(path.read_bytes()[8 : 8 + n])["__metadata__"]
    assert meta["format"] == "gsvkit" and meta["format_version"] == "1"
    assert meta["kind"] == "s2" and meta["version"] == "v2"
    assert json.loads(meta["config"])["model"]["ssl_dim"] == 32
    assert json.loads(meta["info"])["step"] == 120
    assert len(meta["content_sha256"]) == 64
    assert all(isinstance(v, str) for v in meta.values())


def test_loads_with_plain_safetensors_no_pickle(saved):
    from safetensors.torch import load_file

    path, sd = saved
    assert torch.equal(load_file(str(path))["dec.conv_post.weight"], sd["dec.conv_post.weight"])


def test_read_header_is_metadata_only(saved):
    path, sd = saved
    h = read_header(path)
    assert (h.kind, h.version, h.source_format, h.format_version) == ("s2", "v2", "gsvkit", "1")
    assert h.tensors["enc_p.text_embedding.weight"] == ("float32", (732, 8))
    assert h.num_params == sum(v.numel() for v in sd.values())
    assert h.to_dict()["info"]["epoch"] == 3


def test_fp16_export_casts_floats_only(tmp_path):
    sd = _state()
    path = save_checkpoint(tmp_path / "h.safetensors", sd, _s2_config(), dtype=torch.float16)
    got = load_checkpoint(path).state_dict
    assert got["dec.conv_post.weight"].dtype == torch.float16
    assert torch.equal(got["dec.conv_post.weight"], sd["dec.conv_post.weight"].half())
    assert got["steps"].dtype == torch.int64 and got["flags"].dtype == torch.bool
    assert path.stat().st_size < save_checkpoint(tmp_path / "f.safetensors", sd, _s2_config()).stat().st_size


def test_s1_and_discriminator_kinds(tmp_path):
    s1 = save_checkpoint(tmp_path / "s1.safetensors", {"h.layers.0.norm1.weight": torch.ones(4)}, _s1_config())
    assert load_checkpoint(s1).kind == "s1"
    d_sd = {"discriminators.0.conv_post.weight": torch.ones(1, 4, 3)}
    d = save_checkpoint(tmp_path / "d.safetensors", d_sd, _s2_config())
    assert load_checkpoint(d).kind == "s2d"
    with pytest.raises(CheckpointError, match="kind"):
        save_checkpoint(tmp_path / "x.safetensors", d_sd, _s1_config(), kind="s2")


def test_config_given_as_dict_is_validated(tmp_path):
    cfg = _s1_config().model_dump(mode="json")
    path = save_checkpoint(tmp_path / "s1.safetensors", {"w": torch.ones(2)}, cfg)
    assert load_checkpoint(path).config == _s1_config()
    cfg["model"]["hedd"] = 3
    with pytest.raises(CheckpointError, match="hedd"):
        save_checkpoint(tmp_path / "bad.safetensors", {"w": torch.ones(2)}, cfg)


def test_shared_tensors_are_saved_separately(tmp_path):
    w = torch.randn(4, 4)
    path = save_checkpoint(tmp_path / "tied.safetensors", {"a": w, "b": w, "c": w[1]}, _s2_config())
    got = load_checkpoint(path).state_dict
    assert torch.equal(got["a"], w) and torch.equal(got["b"], w) and torch.equal(got["c"], w[1])


def test_no_overwrite_when_asked(saved):
    path, _ = saved
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(path, {"x": torch.zeros(1)}, _s2_config(), overwrite=False)
    assert path.read_bytes() == before
    save_checkpoint(path, {"x": torch.zeros(1)}, _s2_config())  # default overwrite=True replaces
    assert list(load_checkpoint(path).state_dict) == ["x"]


def test_failed_save_leaves_old_file_and_no_temp(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()
    from gsvkit.checkpoint import format as fmt

    def boom(p, tensors, metadata):
        Path(p).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(fmt, "write_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"x": torch.zeros(1)}, _s2_config())
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_info_with_tensors_and_paths_is_stored_as_json(tmp_path):
    info = {"loss": torch.tensor(0.5), "dataset": tmp_path, "hist": (1, 2)}
    path = save_checkpoint(tmp_path / "i.safetensors", {"w": torch.ones(1)}, _s2_config(), info)
    assert load_checkpoint(path).info == {"loss": 0.5, "dataset": str(tmp_path), "hist": [1, 2]}


# -------------------------------------------------------------------------------------------------- integrity
@pytest.mark.parametrize("cut", [0.999, 0.75, 0.5, 0.1])
def test_truncated_copy_is_refused(saved, tmp_path, cut):
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(CheckpointError, match="truncated"):
        read_header(bad)


def test_truncated_data_message_names_sizes(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:-10])
    (n,) = struct.unpack("<Q", data[:8])
    total = len(data) - 8 - n
    with pytest.raises(CheckpointError, match=f"expected {total} bytes of tensor data, found {total - 10}"):
        load_checkpoint(bad)


@pytest.mark.parametrize("cut", [3, 8, 20])
def test_truncated_inside_header(saved, tmp_path, cut):
    path, _ = saved
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)


@pytest.mark.parametrize("where", [1, 100, -5])
def test_flipped_byte_in_data_is_detected(saved, tmp_path, where):
    path, _ = saved
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    pos = 8 + n + where if where >= 0 else len(data) + where
    data[pos] ^= 0x40
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(bad)
    assert load_checkpoint(bad, verify=False).kind == "s2"  # opting out of the checksum reads it anyway


def test_flipped_byte_in_header_is_detected(saved, tmp_path):
    path, _ = saved
    data = bytearray(path.read_bytes())
    i = data.index(b'"dec.conv_post.weight"')
    data[i + 2] = ord("x")  # rename a tensor: the checksum covers names too
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(bad)
    data[8 + 3] = ord("}")  # and a broken JSON header
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted header"):
        load_checkpoint(bad)


def test_trailing_garbage_is_detected(saved, tmp_path):
    path, _ = saved
    bad = tmp_path / "long.safetensors"
    bad.write_bytes(path.read_bytes() + b"\0" * 7)
    with pytest.raises(CheckpointError, match="7 unexpected bytes"):
        load_checkpoint(bad)


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(p), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="without gsvkit metadata"):
        load_checkpoint(p)


def test_newer_format_version_is_refused(saved, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path, _ = saved
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    meta["format_version"] = "9"
    p = tmp_path / "new.safetensors"
    save_file(load_file(str(path)), str(p), metadata=meta)
    with pytest.raises(CheckpointError, match="upgrade gsvkit"):
        load_checkpoint(p)


def test_bad_inputs(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(empty)
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1)).byte().numpy().tobytes())
    with pytest.raises(CheckpointError, match="not a checkpoint gsvkit can read"):
        load_checkpoint(rnd)
    text = tmp_path / "notes.pth"
    text.write_text("hello, this is not a model\n" * 20)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        read_header(text)


def test_empty_state_dict_and_non_tensor_values_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="empty"):
        save_checkpoint(tmp_path / "e.safetensors", {}, _s2_config())
    with pytest.raises(CheckpointError, match="not a tensor"):
        save_checkpoint(tmp_path / "e.safetensors", {"a": [1, 2]}, _s2_config())
