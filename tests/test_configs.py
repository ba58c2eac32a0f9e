"""Every shipped config parses, round-trips, and a wrong field or value is an error that names it."""

from pathlib import Path

import pytest

from gsvkit.config import (
    ConfigError,
    S1Config,
    S2Config,
    config_from_dict,
    config_from_json,
    dump_config,
    load_config,
    official_config,
)

CONFIGS = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))


def test_configs_exist():
    names = {str(p.relative_to(p.parents[1] if p.parent.name == "tiny" else p.parent)) for p in CONFIGS}
    assert {"s1-v2.yaml", "s2-v2.yaml", "s1-v1.yaml", "s2-v1.yaml"} <= names
    assert any(p.parent.name == "tiny" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name if p.parent.name != "tiny" else f"tiny/{p.name}")
def test_shipped_config_parses_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, (S1Config, S2Config))
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg
    assert config_from_json(cfg.model_dump_json()) == cfg


def test_official_values():
    s2 = official_config("s2", "v2")
    assert s2.model.symbols == 732 and s2.model.ref_bins == 704 and s2.model.spec_channels == 1025
    assert s2.model.hop_length == 640 == s2.data.hop_length
    s2v1 = official_config("s2", "v1")
    assert s2v1.model.symbols == 322 and s2v1.model.ref_bins == 1025
    s1 = official_config("s1", "v2")
    assert s1.model.phone_vocab == 732 and s1.model.n_layer == 24 and s1.model.vocab_size == 1025
    assert official_config("s1", "v1").model.phone_vocab == 512
    assert load_config(Path(__file__).parents[1] / "configs" / "s2-v2.yaml") == s2


def test_unknown_field_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("kind: s2\nmodel:\n  hiden_channels: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "model.hiden_channels" in str(e.value) and str(p) in str(e.value)


def test_bad_value_is_named():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"kind": "s1", "model": {"n_layer": -3}})
    assert "model.n_layer" in str(e.value) and "-3" in str(e.value)
    with pytest.raises(ConfigError, match="kind"):
        config_from_dict({"model": {}})
    with pytest.raises(ConfigError, match="version"):
        config_from_dict({"kind": "s2", "model": {"version": "v9"}})


def test_inconsistent_s2_audio_is_refused():
    with pytest.raises(ConfigError, match="hop_length"):
        config_from_dict({"kind": "s2", "data": {"hop_length": 320}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("kind: [s2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(p)


def test_keys_nothing_reads_are_ignored_on_load():
    """Upstream configs (and older files) carry data.max_wav_value and train.segment_size: accepted, not kept."""
    cfg = S2Config.model_validate({"data": {"max_wav_value": 32768.0}, "train": {"segment_size": 20480}})
    assert "max_wav_value" not in S2Config.model_fields["data"].annotation.model_fields
    assert "segment_size" not in cfg.train.model_dump() and "max_wav_value" not in cfg.data.model_dump()
    with pytest.raises(ValueError, match="segment_sizee"):
        S2Config.model_validate({"train": {"segment_sizee": 1}})
