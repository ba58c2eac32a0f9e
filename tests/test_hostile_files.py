"""Hostile weight files and configs are refused fast, in bounded memory, with one line naming the limit."""

from __future__ import annotations

import time

import pytest
import yaml

import hostile
from gsvkit import limits
from gsvkit.checkpoint import convert_checkpoint, load_checkpoint, read_header
from gsvkit.checkpoint.unpickler import read_torch_file
from gsvkit.config import ConfigError, load_config
from gsvkit.errors import CheckpointError, GsvError, LimitError


@pytest.mark.parametrize("fn", [read_header, load_checkpoint])
def test_billion_laughs_pickle_is_refused_fast(fn, tmp_path):
    bomb = hostile.laughs_checkpoint(tmp_path / "laughs.pth", levels=40)
    assert bomb.stat().st_size < 1000
    start = time.monotonic()
    with pytest.raises(LimitError, match=r"laughs\.pth: refused to load.*MAX_PICKLE_OBJECTS"):
        fn(bomb)
    assert time.monotonic() - start < 5  # 2**40 objects would take hours; the bound is checked in linear time


def test_laughs_just_under_the_limit_still_load(tmp_path):
    # 2**20 leaves stays under MAX_PICKLE_OBJECTS: the limit refuses size, not sharing as such.
    ok = hostile.laughs_checkpoint(tmp_path / "ok.pth", levels=20)
    assert read_torch_file(ok, lazy=True).obj is not None


def test_raising_the_limit_lets_a_large_tree_through(tmp_path, monkeypatch):
    f = hostile.laughs_checkpoint(tmp_path / "l.pth", levels=12)
    monkeypatch.setattr(limits, "MAX_PICKLE_OBJECTS", 1000)
    with pytest.raises(LimitError, match="raise gsvkit.limits.MAX_PICKLE_OBJECTS"):
        read_torch_file(f, lazy=True)
    monkeypatch.setattr(limits, "MAX_PICKLE_OBJECTS", 100_000)
    read_torch_file(f, lazy=True)


def test_memo_index_bomb_is_refused(tmp_path):
    f = hostile.torch_zip(tmp_path / "memo.pth", hostile.memo_bomb_pickle())
    with pytest.raises(CheckpointError, match="memo index"):
        read_torch_file(f)


def test_deeply_nested_pickle_is_refused(tmp_path):
    f = hostile.torch_zip(tmp_path / "deep.pth", hostile.deep_pickle(100_000))
    with pytest.raises(LimitError, match="MAX_PICKLE_DEPTH"):
        read_torch_file(f)


def test_zip_bomb_is_refused_before_inflating(tmp_path):
    bomb = hostile.zip_bomb_checkpoint(tmp_path / "bomb.pth", inflated_mb=200)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(LimitError, match=r"bomb\.pth: zip entry 'archive/data/0'.*MAX_ZIP_RATIO"):
        convert_checkpoint(bomb, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_zip_entry_declaring_more_than_it_holds_is_refused(tmp_path):
    f = hostile.lying_zip_checkpoint(tmp_path / "lie.pth")
    with pytest.raises(CheckpointError, match="declares 1073741824 bytes but occupies 64"):
        read_torch_file(f)


def test_nested_safetensors_metadata_is_one_error(tmp_path):
    f = hostile.nested_metadata_safetensors(tmp_path / "deep.safetensors")
    with pytest.raises(CheckpointError, match=r"deep\.safetensors: corrupted header"):
        read_header(f)


def test_config_with_thousands_of_layers_is_refused_before_allocating(tmp_path):
    f = hostile.huge_architecture_safetensors(tmp_path / "5000.safetensors", n_layer=5000)
    with pytest.raises(CheckpointError, match=r"n_layer.*5,000 exceeds the limit MAX_LAYERS=256"):
        convert_checkpoint(f, tmp_path / "out.safetensors")
    with pytest.raises(CheckpointError, match="MAX_LAYERS"):
        read_header(f)


def test_yaml_alias_bomb_is_refused_without_printing_the_expansion(tmp_path):
    f = hostile.yaml_laughs(tmp_path / "laughs.yaml")
    assert f.stat().st_size < 700
    start = time.monotonic()
    with pytest.raises(LimitError) as info:
        load_config(f)
    assert time.monotonic() - start < 5
    assert "MAX_YAML_NODES" in str(info.value) and len(str(info.value)) < 400
    assert isinstance(info.value, GsvError)  # commands catch one type


def test_yaml_recursive_alias_is_refused(tmp_path):
    with pytest.raises(LimitError, match="recursive alias"):
        limits.load_yaml("a: &a [*a]\n", "x.yaml")


def test_ordinary_yaml_aliases_still_work():
    assert limits.load_yaml("a: &x {b: 1}\nc: *x\n", "ok.yaml") == {"a": {"b": 1}, "c": {"b": 1}}
    with pytest.raises(yaml.YAMLError):
        limits.load_yaml("a: [\n", "bad.yaml")


def test_invalid_config_error_prints_a_bounded_value(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("kind: s1\nmodel:\n  n_layer: [" + ", ".join(["1"] * 5000) + "]\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert "n_layer" in str(info.value) and len(str(info.value)) < 500


def test_latin1_config_is_one_error(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes("kind: s1\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(f)


def test_upstream_file_whose_config_claims_5000_layers_is_refused(tmp_path):
    from collections import OrderedDict

    from parity import manifest_keys, s2_hps, save_torch, tiny_state_dict

    keys = dict(manifest_keys("manifest_s2_v2.json"), **{"enc_p.text_embedding.weight": [732, 192]})
    weight = {k: v for k, v in tiny_state_dict(keys, real=("enc_p.text_embedding.weight",)).items() if "enc_q" not in k}
    hps = s2_hps("v2")
    hps["model"]["n_layers"] = 5000
    f = save_torch(OrderedDict(weight=weight, config=hps, info="x"), tmp_path / "s2_5000.pth")
    with pytest.raises(GsvError, match=r"n_layers.*exceeds the limit MAX_LAYERS=256"):
        convert_checkpoint(f, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
