"""Import of official GPT-SoVITS files: the fixture container samples, synthetic upstream-style files of every
supported kind, version detection, refusal of newer versions, integrity errors and the restricted unpickler."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from gsvkit.checkpoint import load_checkpoint, read_header, save_checkpoint
from gsvkit.checkpoint.unpickler import RestrictedUnpickler, TensorRef, read_torch_file
from gsvkit.errors import CheckpointError
from parity import CONTAINERS, HPARAMS_SRC, manifest_keys, s2_hps, save_torch, tiny_state_dict

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests/fixtures/gsv_v2_parity"
EXPECTED = np.load(FIX / "containers_expected.npz")



def _expected(stem: str) -> dict[str, np.ndarray]:
    return {k.split("__", 1)[1]: EXPECTED[k] for k in EXPECTED.files if k.startswith(stem + "__")}


# ------------------------------------------------------------------------------------------- fixture samples
def test_s2_export_imports_exactly():
    ckpt = load_checkpoint(FIX / "s2_export_v2.pth")
    assert (ckpt.kind, ckpt.version, ckpt.source_format) == ("s2", "v2", "s2-export")
    exp = _expected("s2_export_v2")
    assert set(ckpt.state_dict) == set(exp)
    for k, v in exp.items():
        got = ckpt.state_dict[k]
        assert got.dtype == torch.float16 and got.numpy().tobytes() == v.tobytes(), k
    assert ckpt.info["epoch"] == 8 and ckpt.info["step"] == 224
    assert ckpt.info["upstream_info"] == "8epoch_224iteration"
    assert ckpt.info["upstream_config"] == CONTAINERS["s2_export_v2.pth"]["config_as_dict"]
    assert ckpt.config.model.gin_channels == 512 and ckpt.config.data.hop_length == 640


def test_s1_export_imports_exactly_without_model_prefix():
    ckpt = load_checkpoint(FIX / "s1_export.ckpt")
    assert (ckpt.kind, ckpt.version, ckpt.source_format) == ("s1", "v2", "s1-export")
    exp = _expected("s1_export")
    assert {"model." + k for k in ckpt.state_dict} == set(exp)
    for k, v in exp.items():
        got = ckpt.state_dict[k.removeprefix("model.")]
        assert got.dtype == torch.float16 and got.numpy().tobytes() == v.tobytes(), k
    assert ckpt.info["epoch"] == 15
    assert ckpt.config.model.phone_vocab == 732 and ckpt.config.model.n_layer == 24
    assert ckpt.info["upstream_config"] == CONTAINERS["s1_export.ckpt"]["config_as_dict"]


@pytest.mark.parametrize("name", ["s2_export_v2.pth", "s2_export_v2Pro.pth", "s1_export.ckpt"])
def test_low_level_container_read_matches(name):
    tf = read_torch_file(FIX / name)
    meta = CONTAINERS[name]
    assert tf.entries == meta["zip_entries"]
    assert list(tf.obj) == meta["top_level_keys"]
    exp = _expected(name.rsplit(".", 1)[0])
    assert list(tf.obj["weight"]) == list(exp)
    for k, v in exp.items():
        assert tf.obj["weight"][k].numpy().tobytes() == v.tobytes()
    assert tf.obj["info"] == meta["info"]
    from gsvkit.checkpoint.unpickler import plain

    assert plain(tf.obj["config"]) == meta["config_as_dict"]
    lazy = read_torch_file(FIX / name, lazy=True)
    for k, v in exp.items():
        ref = lazy.obj["weight"][k]
        assert isinstance(ref, TensorRef) and ref.shape == v.shape and ref.dtype == torch.float16


def test_v2pro_header_file_is_read_as_v2pro():
    # Upstream's own my_save2 output: "05" over the zip magic, 4 tensors (no sv_emb among them: the header decides).
    assert read_torch_file(FIX / "s2_export_v2Pro.pth").header_version == "v2Pro"
    for fn in (load_checkpoint, read_header):
        got = fn(FIX / "s2_export_v2Pro.pth")
        assert (got.kind, got.version, got.source_format) == ("s2", "v2Pro", "s2-export-header")
        assert got.config.model.gin_channels == 1024 and got.config.model.is_pro


@pytest.mark.parametrize("name", ["s2_export_v2.pth", "s1_export.ckpt"])
def test_converted_file_reloads_to_same_tensors(name, tmp_path):
    src = load_checkpoint(FIX / name)
    out = save_checkpoint(tmp_path / "m.safetensors", src.state_dict, src.config, src.info, kind=src.kind)
    back = load_checkpoint(out)
    assert (back.kind, back.version, back.config) == (src.kind, src.version, src.config)
    assert back.info == src.info
    for k, v in src.state_dict.items():
        assert back.state_dict[k].dtype == v.dtype and torch.equal(back.state_dict[k], v)


@pytest.mark.parametrize("name", ["s2_export_v2.pth", "s2_export_v2Pro.pth", "s1_export.ckpt"])
@pytest.mark.parametrize("frac", [0.05, 0.3, 0.6, 0.9, 0.995])
def test_truncated_official_copy_is_refused(name, frac, tmp_path):
    data = (FIX / name).read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("name", ["s2_export_v2.pth", "s1_export.ckpt"])
def _flip_in_entry(src: Path, dst: Path, suffix: str, at: int) -> None:
    """Copy `src` to `dst` with one bit flipped `at` bytes into the stored data of the entry ending in `suffix`."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = [i for i in zf.infolist() if i.filename.endswith(suffix)][0]
    # A local header is 30 bytes, then the name and an extra field (torch pads it to align the data).
    h = info.header_offset
    n = int.from_bytes(data[h + 26 : h + 28], "little")
    e = int.from_bytes(data[h + 28 : h + 30], "little")
    data[h + 30 + n + e + at] ^= 0x01
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["s2_export_v2.pth", "s1_export.ckpt"])
def test_flipped_byte_in_tensor_storage_is_refused(name, tmp_path):
    bad = tmp_path / name
    _flip_in_entry(FIX / name, bad, "/data/3", 5)
    with pytest.raises(CheckpointError, match=r"corrupted zip entry '.*data/3'.*CRC"):
        load_checkpoint(bad)


def _rewrite_zip(src: Path, dst: Path, drop: str | None = None, replace: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            if drop and item.filename.endswith(drop):
                continue
            data = zin.read(item.filename)
            for suffix, new in (replace or {}).items():
                if item.filename.endswith(suffix):
                    data = new
            zout.writestr(item.filename, data)


def test_missing_entries_and_short_storage_are_refused(tmp_path):
    src = FIX / "s2_export_v2.pth"
    bad = tmp_path / "missing.pth"
    _rewrite_zip(src, bad, drop="/data/2")
    with pytest.raises(CheckpointError, match=r"missing zip entry '1724000000.0/data/2'"):
        load_checkpoint(bad)
    _rewrite_zip(src, bad, drop="/data.pkl")
    with pytest.raises(CheckpointError, match="data.pkl"):
        load_checkpoint(bad)
    _rewrite_zip(src, bad, replace={"/data/1": b"\0" * 100})
    with pytest.raises(CheckpointError, match=r"truncated storage .*data/1': expected 1728 bytes, found 100"):
        load_checkpoint(bad)
    with zipfile.ZipFile(src) as zf:
        pkl = zf.read("1724000000.0/data.pkl")
    _rewrite_zip(src, bad, replace={"/data.pkl": pkl[: len(pkl) // 2]})
    with pytest.raises(CheckpointError, match="corrupted object table"):
        load_checkpoint(bad)


# ------------------------------------------------------------------------------------- restricted unpickler
def _marker_cmd(tmp_path: Path) -> tuple[Path, bytes]:
    marker = tmp_path / "pwned"
    return marker, f"touch {marker}".encode()


def _evil_pickles(cmd: bytes) -> dict[str, bytes]:
    arg = b"X" + len(cmd).to_bytes(4, "little") + cmd  # BINUNICODE opcode with the shell command
    return {
        # protocol 0/1: GLOBAL 'os system', MARK, arg, TUPLE, REDUCE
        "global": b"\x80\x02cos\nsystem\n(" + arg + b"tR.",
        # protocol 4: STACK_GLOBAL with module and name as strings
        "stack_global": b"\x80\x04\x8c\x02os\x8c\x06system\x93(" + arg + b"tR.",
        # INST opcode: builds an instance by calling the class directly
        "inst": b"(" + arg + b"ios\nsystem\n.",
        "posix": b"\x80\x02cposix\nsystem\n(" + arg + b"tR.",
        "builtins_eval": b"\x80\x02cbuiltins\neval\n(X\x04\x00\x00\x001+1tR.",
        # a harmless-looking dict whose value hides the call
        "nested": b"\x80\x02}(X\x06\x00\x00\x00weight" + b"cos\nsystem\n(" + arg + b"tRu.",
    }


@pytest.mark.parametrize("variant", ["global", "stack_global", "inst", "posix", "builtins_eval", "nested"])
def test_restricted_unpickler_refuses_os_system(variant, tmp_path):
    marker, cmd = _marker_cmd(tmp_path)
    data = _evil_pickles(cmd)[variant]
    with pytest.raises(CheckpointError, match=r"refused to load.*'(os|posix|builtins)\.(system|eval)'"):
        RestrictedUnpickler(data, "evil.pkl").load()
    assert not marker.exists()


def test_evil_pickle_inside_a_torch_zip_is_refused(tmp_path):
    marker, cmd = _marker_cmd(tmp_path)
    evil = tmp_path / "evil.pth"
    _rewrite_zip(FIX / "s2_export_v2.pth", evil, replace={"/data.pkl": _evil_pickles(cmd)["nested"]})
    for fn in (load_checkpoint, read_header):
        with pytest.raises(CheckpointError, match=r"evil\.pth: refused to load.*'os\.system'"):
            fn(evil)
    assert not marker.exists()


def test_crafted_state_on_placeholders_is_refused(tmp_path):
    # BUILD on a storage-type placeholder would let a file overwrite our own bookkeeping objects.
    bad = tmp_path / "build.pth"
    crafted = b"\x80\x02ctorch\nHalfStorage\n}X\x05\x00\x00\x00dtypeK\x01sb."
    _rewrite_zip(FIX / "s2_export_v2.pth", bad, replace={"/data.pkl": crafted})
    with pytest.raises(CheckpointError, match="corrupted object table.*unexpected state"):
        load_checkpoint(bad)


def test_read_header_reads_no_tensor_data(tmp_path):
    bad = tmp_path / "s2.pth"
    _flip_in_entry(FIX / "s2_export_v2.pth", bad, "/data/1", 10)
    header = read_header(bad)
    assert header.tensors["enc_p.encoder_ssl.attn_layers.0.emb_rel_k"] == ("float16", (1, 9, 96))
    with pytest.raises(CheckpointError, match="CRC"):
        load_checkpoint(bad)


def test_unknown_class_is_refused_not_imported(tmp_path):
    # A global of a module that is not loaded must not even be imported.
    data = b"\x80\x02csome_module_that_does_not_exist\nThing\n)R."
    with pytest.raises(CheckpointError, match="some_module_that_does_not_exist.Thing"):
        RestrictedUnpickler(data, "x").load()


# ------------------------------------------------------------------------------- synthetic upstream-style files



@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """Upstream-like files of every supported kind, written with torch.save as upstream does."""
    d = tmp_path_factory.mktemp("upstream")
    (d / "fake").mkdir()
    (d / "fake" / "utils.py").write_text(HPARAMS_SRC)
    spec = importlib.util.spec_from_file_location("utils", d / "fake" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    s2_keys = manifest_keys("manifest_s2_v2.json")
    s1_keys = manifest_keys("manifest_s1_v2.json")
    d_keys = manifest_keys("manifest_s2D_v2.json")
    files = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(__import__("sys").modules, "utils", utils)
        for version, rows in (("v1", 322), ("v2", 732)):
            keys = dict(s2_keys, **{"enc_p.text_embedding.weight": [rows, 192]})
            weight = {k: v for k, v in tiny_state_dict(keys, real=("enc_p.text_embedding.weight",)).items()
                      if "enc_q" not in k}  # fmt: skip
            hps = utils.HParams(**s2_hps(version))
            export = OrderedDict(weight=weight, config=hps, info="4epoch_100iteration")
            files[f"s2_export_{version}"] = save_torch(export, d / f"s2_{version}.pth")
            # v1 file whose config wrongly says v2: the embedding rows decide
            if version == "v1":
                wrong = OrderedDict(weight=weight, config=utils.HParams(**s2_hps("v2")), info="x")
                files["s2_export_v1_cfg_v2"] = save_torch(wrong, d / "s2_v1_cfg_v2.pth")
            files[f"s2_header_{version}"] = save_torch(
                export, d / f"s2_h_{version}.pth", header=b"00" if version == "v1" else b"01"
            )
        # header-tagged file without the embedding key: the tag decides
        no_emb = {k: v for k, v in weight.items() if k != "enc_p.text_embedding.weight"}
        files["s2_header_v1_noemb"] = save_torch(
            OrderedDict(weight=no_emb, config=utils.HParams(**s2_hps("v2")), info="x"), d / "s2_h_v1_noemb.pth", b"00"
        )
        for tag, name in (
            (b"02", "v3"),
            (b"03", "v3-LoRA"),
            (b"04", "v4-LoRA"),
            (b"06", "v2ProPlus"),
            (b"07", "v5dev"),
            (b"08", "v5turbo"),
        ):
            files[f"s2_tag_{name}"] = save_torch(export, d / f"s2_tag_{name}.pth", header=tag)
        # newer versions recognised by their content, with a plain "PK" header
        pro = dict(weight, **{"sv_emb.weight": torch.zeros(2), "ge_to512.weight": torch.zeros(2)})
        cfg_pro = s2_hps("v2")
        del cfg_pro["model"]["version"], cfg_pro["version"]
        files["s2_content_v2Pro"] = save_torch(
            OrderedDict(weight=pro, config=utils.HParams(**cfg_pro), info="x"), d / "p.pth"
        )
        plus = dict(pro, **{"dec.conv_pre.weight": torch.zeros(768, 1, 1)})
        files["s2_content_v2ProPlus"] = save_torch(OrderedDict(weight=plus, info="x"), d / "pp.pth")
        v3 = {"cfm.estimator.proj.weight": torch.zeros(2), "enc_p.text_embedding.weight": torch.zeros(732, 2)}
        files["s2_content_v3"] = save_torch({"weight": v3, "info": "pretrained_s2G_v3"}, d / "v3.pth")
        files["s2_content_v4"] = save_torch({"weight": v3, "info": "pretrained_s2G_v4"}, d / "v4.pth")
        lora = dict(v3, **{"cfm.x.lora_A.weight": torch.zeros(2)})
        files["s2_content_lora"] = save_torch({"weight": lora, "lora_rank": 32, "info": "x"}, d / "lora.pth")

    # pretrained G (enc_q kept, no config) and D, as in s2G*.pth / s2D*.pth
    g_weight = tiny_state_dict(s2_keys, real=("enc_p.text_embedding.weight",), dtype=torch.float32)
    files["s2_pretrained_G"] = save_torch({"weight": g_weight}, d / "s2G488k.pth")
    files["s2_pretrained_D"] = save_torch({"weight": tiny_state_dict(d_keys, dtype=torch.float32)}, d / "s2D488k.pth")
    files["s2_train_G"] = save_torch(
        {"model": g_weight, "iteration": 6, "optimizer": {"state": {}, "param_groups": []}, "learning_rate": 1e-4},
        d / "G_6.pth",
    )
    # s1 exports (v1 has 512 phone rows) and a Lightning checkpoint
    s1_cfg = json.loads(json.dumps(CONTAINERS["s1_export.ckpt"]["config_as_dict"]))
    for version, rows in (("v1", 512), ("v2", 732)):
        keys = dict(s1_keys, **{"ar_text_embedding.word_embeddings.weight": [rows, 512]})
        w = tiny_state_dict(keys, real=("ar_text_embedding.word_embeddings.weight",))
        w = OrderedDict(("model." + k, v) for k, v in w.items())
        cfg = json.loads(json.dumps(s1_cfg))
        cfg["model"]["phoneme_vocab_size"] = rows
        files[f"s1_export_{version}"] = save_torch(
            OrderedDict(weight=w, config=cfg, info="GPT-e7"), d / f"s1_{version}.ckpt"
        )
    sd = OrderedDict((k, v.float()) for k, v in w.items())
    lightning = {
        "epoch": 11,
        "global_step": 4321,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 12, "completed": 11}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": torch.tensor(0.25), "dirpath": "x"}},
        "optimizer_states": [
            {
                "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4), "delta": torch.zeros(4)}},
                "param_groups": [{"lr": 0.002, "betas": (0.9, 0.95), "params": [0], "names": {"a"}}],
            }
        ],
        "lr_schedulers": [{"base_lrs": [0.01], "last_epoch": 3, "_step_count": 4}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"config": s1_cfg, "output_dir": "logs"},
        "extras": {"np": np.float32(1.5), "dt": np.dtype("float32"), "dd": __import__("collections").defaultdict(list)},
    }
    files["s1_lightning"] = save_torch(lightning, d / "epoch=11-step=4321.ckpt")
    files["s1_bare"] = save_torch(OrderedDict((k.removeprefix("model."), v) for k, v in sd.items()), d / "s1_bare.pt")
    return files


@pytest.mark.parametrize(
    ("name", "kind", "version", "fmt"),
    [
        ("s2_export_v1", "s2", "v1", "s2-export"),
        ("s2_export_v2", "s2", "v2", "s2-export"),
        ("s2_export_v1_cfg_v2", "s2", "v1", "s2-export"),
        ("s2_header_v1", "s2", "v1", "s2-export-header"),
        ("s2_header_v2", "s2", "v2", "s2-export-header"),
        ("s2_header_v1_noemb", "s2", "v1", "s2-export-header"),
        ("s2_pretrained_G", "s2", "v2", "s2-pretrained-G"),
        ("s2_pretrained_D", "s2d", "v2", "s2-pretrained-D"),
        ("s2_train_G", "s2", "v2", "s2-train-G"),
        ("s1_export_v1", "s1", "v1", "s1-export"),
        ("s1_export_v2", "s1", "v2", "s1-export"),
        ("s1_lightning", "s1", "v2", "s1-lightning-ckpt"),
        ("s1_bare", "s1", "v2", "s1-state-dict"),
    ],
)
def test_synthetic_official_files(upstream, name, kind, version, fmt, tmp_path):
    path = upstream[name]
    ckpt = load_checkpoint(path)
    assert (ckpt.kind, ckpt.version, ckpt.source_format) == (kind, version, fmt)
    header = read_header(path)
    assert (header.kind, header.version, header.source_format) == (kind, version, fmt)
    assert header.num_params == ckpt.num_params
    assert ckpt.config.model.version == version
    if kind == "s2":
        assert ckpt.config.model.symbols == {"v1": 322, "v2": 732}[version]
        assert ckpt.config.model.ref_bins == {"v1": 1025, "v2": 704}[version]
        if "enc_p.text_embedding.weight" in ckpt.state_dict:
            assert ckpt.state_dict["enc_p.text_embedding.weight"].shape[0] == ckpt.config.model.symbols
    if kind == "s1":
        assert ckpt.config.model.phone_vocab == {"v1": 512, "v2": 732}[version]
        assert not any(k.startswith("model.") for k in ckpt.state_dict)
        assert ckpt.state_dict["ar_text_embedding.word_embeddings.weight"].shape[0] == ckpt.config.model.phone_vocab
    # and it converts to our format and back unchanged
    out = save_checkpoint(tmp_path / "c.safetensors", ckpt.state_dict, ckpt.config, ckpt.info, kind=ckpt.kind)
    back = load_checkpoint(out)
    assert back.kind == kind and back.version == version
    assert all(torch.equal(back.state_dict[k], v) for k, v in ckpt.state_dict.items())


def test_full_key_sets_survive(upstream):
    s2 = load_checkpoint(upstream["s2_pretrained_G"]).state_dict
    assert set(s2) == set(manifest_keys("manifest_s2_v2.json"))  # enc_q included in pretrained G
    export = load_checkpoint(upstream["s2_export_v2"]).state_dict
    assert set(export) == {k for k in s2 if not k.startswith("enc_q.")}
    d = load_checkpoint(upstream["s2_pretrained_D"]).state_dict
    assert set(d) == set(manifest_keys("manifest_s2D_v2.json"))
    s1 = load_checkpoint(upstream["s1_lightning"]).state_dict
    assert set(s1) == set(manifest_keys("manifest_s1_v2.json"))


def test_training_info_is_kept(upstream):
    lit = load_checkpoint(upstream["s1_lightning"])
    assert lit.info["epoch"] == 11 and lit.info["step"] == 4321 and lit.info["lightning"] == "2.4.0"
    assert lit.info["upstream_config"]["model"]["phoneme_vocab_size"] == 732
    g = load_checkpoint(upstream["s2_train_G"])
    assert g.info["epoch"] == 6 and g.info["learning_rate"] == 1e-4
    hdr = load_checkpoint(upstream["s2_header_v1"])
    assert hdr.info["header_version"] == "v1" and hdr.info["epoch"] == 4 and hdr.info["step"] == 100


@pytest.mark.parametrize(("name", "version"), [("s2_tag_v5dev", "v5dev"), ("s2_tag_v5turbo", "v5turbo")])
def test_newer_versions_are_refused(upstream, name, version):
    for fn in (load_checkpoint, read_header):
        with pytest.raises(CheckpointError, match=f"is a GPT-SoVITS {version} model; gsvkit supports v1, v2, v2Pro"):
            fn(upstream[name])


@pytest.mark.parametrize("name", ["s2_tag_v3", "s2_tag_v3-LoRA", "s2_tag_v4-LoRA"])
def test_v3_v4_tags_on_v2_weights_are_refused(upstream, name):
    # a 02/03/04 header on weights with no flow decoder: damaged or mislabelled, never read as v2
    for fn in (load_checkpoint, read_header):
        with pytest.raises(CheckpointError, match="holds no flow-decoder weights"):
            fn(upstream[name])


@pytest.mark.parametrize("name", ["s2_content_v3", "s2_content_v4"])
def test_incomplete_v3_v4_weights_are_refused(upstream, name):
    with pytest.raises(CheckpointError, match="not a full SynthesizerTrnV3 state dict"):
        load_checkpoint(upstream[name])


def test_lora_file_without_base_names_the_base(upstream):
    header = read_header(upstream["s2_content_lora"])
    assert (header.kind, header.version, header.info["lora_rank"]) == ("s2", "v3", 32)
    with pytest.raises(CheckpointError, match=r"v3 LoRA file \(adapters only\).*pretrained_models/s2Gv3\.pth"):
        load_checkpoint(upstream["s2_content_lora"])


@pytest.mark.parametrize(
    ("name", "version"),
    [("s2_tag_v2ProPlus", "v2ProPlus"), ("s2_content_v2Pro", "v2Pro"), ("s2_content_v2ProPlus", "v2ProPlus")],
)
def test_pro_versions_from_content_then_header(upstream, name, version):
    # content first (sv_emb/ge_to512 keys; a 768-wide dec.conv_pre is ProPlus), then the "06" tag on v2-looking weights
    header = read_header(upstream[name])
    assert (header.kind, header.version) == ("s2", version)
    if name == "s2_content_v2ProPlus":  # no config in the file: the sizes are the official ones of the version
        assert header.config.model.gin_channels == 1024
        assert header.config.model.upsample_initial_channel == (768 if version == "v2ProPlus" else 512)


def test_wrong_kind_for_model_loader(upstream):
    from gsvkit.checkpoint import load_s1, load_s2, load_s2d

    with pytest.raises(CheckpointError, match=r"holds a SoVITS generator \(s2\) model, but a GPT \(s1\)"):
        load_s1(upstream["s2_export_v2"])
    with pytest.raises(CheckpointError, match=r"holds a GPT \(s1\) model, but a SoVITS generator"):
        load_s2(FIX / "s1_export.ckpt")
    with pytest.raises(CheckpointError, match="discriminator"):
        load_s2(upstream["s2_pretrained_D"])
    with pytest.raises(CheckpointError, match="generator"):
        load_s2d(upstream["s2_export_v2"])


def test_non_checkpoint_pickles_are_refused(tmp_path):
    p = save_torch({"hello": "world", "n": 3}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a GPT-SoVITS checkpoint"):
        load_checkpoint(p)
    p = save_torch({"weight": {"encoder.layer.0.weight": torch.zeros(2)}}, tmp_path / "bert.pth")
    with pytest.raises(CheckpointError, match="neither GPT .* nor SoVITS .*encoder.layer.0.weight"):
        load_checkpoint(p)
    p = save_torch([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="top level is a list"):
        load_checkpoint(p)


def test_legacy_torch_format_is_refused(tmp_path):
    p = tmp_path / "old.pth"
    torch.save({"weight": {"dec.x": torch.zeros(1)}}, p, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        load_checkpoint(p)


def test_big_endian_storage_is_swapped(tmp_path):
    src = FIX / "s1_export.ckpt"
    with zipfile.ZipFile(src) as zf:
        swapped = {
            f"/data/{i}": np.frombuffer(zf.read(f"1724000000.0/data/{i}"), "<f2").astype(">f2").tobytes()
            for i in range(4)
        }
    swapped["/byteorder"] = b"big"
    be = tmp_path / "be.ckpt"
    _rewrite_zip(src, be, replace=swapped)
    got = load_checkpoint(be).state_dict
    ref = load_checkpoint(src).state_dict
    assert all(torch.equal(got[k], ref[k]) for k in ref)


# ---------------------------------------------------------------------------------------------- model loading
def _models_available() -> bool:
    try:
        from gsvkit.models.s1 import Text2SemanticDecoder  # noqa: F401
        from gsvkit.models.s2 import MultiPeriodDiscriminator, SynthesizerTrn  # noqa: F401
    except ImportError:
        return False
    return True


needs_models = pytest.mark.skipif(not _models_available(), reason="gsvkit.models not available")


@needs_models
def test_load_s2_and_s1_from_our_formattiny_state_dict(tmp_path):
    from gsvkit.checkpoint import load_s1, load_s2
    from gsvkit.config import load_config
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.s2 import SynthesizerTrn

    torch.manual_seed(0)
    c2 = load_config(ROOT / "configs/tiny/s2.yaml")
    net = SynthesizerTrn(c2.model)
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("enc_q.")}  # like an export
    p2 = save_checkpoint(tmp_path / "s2.safetensors", sd, c2, {"epoch": 1})
    m2 = load_s2(p2)
    assert not m2.training
    got = m2.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())

    c1 = load_config(ROOT / "configs/tiny/s1.yaml")
    gpt = Text2SemanticDecoder(c1.model)
    p1 = save_checkpoint(tmp_path / "s1.safetensors", gpt.state_dict(), c1, dtype=torch.float16)
    m1 = load_s1(p1)
    assert not m1.training and next(m1.parameters()).dtype == torch.float32
    got = m1.state_dict()
    assert all(torch.equal(got[k], v.half().float()) for k, v in gpt.state_dict().items())

    # weights that do not fit the config are a clear error, not a traceback
    bad = dict(sd)
    bad.pop("dec.conv_post.weight")
    bad["extra.weight"] = torch.zeros(1)
    p_bad = save_checkpoint(tmp_path / "bad.safetensors", bad, c2)
    with pytest.raises(CheckpointError, match=r"1 missing \(e.g. dec.conv_post.weight\); 1 unexpected"):
        load_s2(p_bad)
    wrong = dict(sd, **{"dec.conv_post.weight": torch.zeros(1, 2, 3)})
    p_wrong = save_checkpoint(tmp_path / "wrong.safetensors", wrong, c2)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_s2(p_wrong)


@needs_models
@pytest.mark.slow
def test_load_official_size_exports(tmp_path):
    """Official-size s2 export (fp16, no enc_q, HParams config), s1 v1 export and D load into our models."""
    import sys

    from gsvkit.checkpoint import load_s1, load_s2, load_s2d
    from gsvkit.config import official_config
    from gsvkit.models.s1 import Text2SemanticDecoder
    from gsvkit.models.s2 import MultiPeriodDiscriminator, SynthesizerTrn

    (tmp_path / "utils.py").write_text(HPARAMS_SRC)
    spec = importlib.util.spec_from_file_location("utils", tmp_path / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    torch.manual_seed(0)
    net = SynthesizerTrn(official_config("s2", "v2").model)
    weight = {k: v.half() for k, v in net.state_dict().items() if "enc_q" not in k}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "utils", utils)
        p2 = save_torch(
            OrderedDict(weight=weight, config=utils.HParams(**s2_hps("v2")), info="8epoch_1iteration"),
            tmp_path / "voice.pth",
        )
    del net
    m2 = load_s2(p2)
    assert not m2.training
    got = m2.state_dict()
    assert all(torch.equal(got[k], v.float()) for k, v in weight.items())
    del m2, got

    gpt = Text2SemanticDecoder(official_config("s1", "v1").model)
    w1 = OrderedDict(("model." + k, v.half()) for k, v in gpt.state_dict().items())
    cfg = json.loads(json.dumps(CONTAINERS["s1_export.ckpt"]["config_as_dict"]))
    cfg["model"]["phoneme_vocab_size"] = 512
    p1 = save_torch(OrderedDict(weight=w1, config=cfg, info="GPT-e3"), tmp_path / "gpt.ckpt")
    m1 = load_s1(p1)
    got = m1.state_dict()
    assert got["ar_text_embedding.word_embeddings.weight"].shape == (512, 512)
    assert all(torch.equal(got[k.removeprefix("model.")], v.float()) for k, v in w1.items())
    del m1, got, gpt

    dnet = MultiPeriodDiscriminator(official_config("s2", "v2").model)
    pd = save_torch({"weight": {k: v.half() for k, v in dnet.state_dict().items()}}, tmp_path / "s2D.pth")
    got = load_s2d(pd).state_dict()
    assert all(torch.equal(got[k], v.half().float()) for k, v in dnet.state_dict().items())
