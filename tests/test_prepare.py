"""`gsv prepare` end to end on generated audio, with a tiny random HuBERT and the tiny s2 model.

Covers: mixed formats/rates/channels, slicing of a long recording, transcripts from .list and sidecars, ASR for
untranscribed clips, every kind of bad input in the report, idempotent reruns, recomputing only what changed,
resuming after an interruption inside each stage, user edits of transcripts.list, and the upstream layout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gsvkit.data.manifest import read_manifest
from gsvkit.data.prepare import prepare
from gsvkit.data.prepare_config import PrepareConfig
from gsvkit.errors import CheckpointError, DataError
from tiny import fake_text, speechlike


# ------------------------------------------------------------------------------------------------- fixtures
def speech(seconds: float, sr: int, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-like signal: harmonics of f0 under a 4 Hz envelope, plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    env = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    noise = 0.005 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.15 * env * x + noise).astype(np.float32)


def silence(seconds: float, sr: int) -> np.ndarray:
    return np.zeros(int(seconds * sr), np.float32)


LONG_SPEECH = [(0.5, 0), (5.0, 140), (0.8, 0), (4.5, 180), (1.0, 0), (25.0, 120), (0.7, 0)]


def make_inputs(root: Path) -> tuple[Path, Path]:
    """A folder of recordings (good and bad) and an upstream .list for some of them."""
    inp = root / "in"
    inp.mkdir(parents=True)
    sr = 44100
    long = np.concatenate([speech(d, sr, f0) if f0 else silence(d, sr) for d, f0 in LONG_SPEECH])
    sf.write(inp / "long.wav", np.stack([long, 0.8 * long], 1), sr)  # 44.1 kHz stereo, must be sliced
    sf.write(inp / "a.flac", speech(2.0, 22050, 200, 1), 22050)
    sf.write(inp / "b.ogg", speech(2.5, 16000, 150, 2), 16000)
    sf.write(inp / "c.mp3", speech(1.5, 24000, 170, 3), 24000)
    (inp / "c.txt").write_text("the third one", encoding="utf-8")  # sidecar transcript
    (inp / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    sf.write(inp / "silent.wav", silence(2.0, 16000), 16000)
    sf.write(inp / "short.wav", speech(0.3, 16000), 16000)
    sf.write(inp / "zh.wav", speech(2.0, 16000, seed=4), 16000)
    sf.write(inp / "punct.wav", speech(2.0, 16000, seed=5), 16000)
    sf.write(inp / "latin.wav", speech(2.0, 16000, seed=6), 16000)
    lines = [
        "in/a.flac|spk1|EN|hello there",
        "in/b.ogg|spk2|EN|general kenobi",
        "in/corrupt.wav|spk1|EN|broken file",
        "in/silent.wav|spk1|EN|nothing at all",
        "in/short.wav|spk1|EN|short",
        "/elsewhere/missing.wav|spk1|EN|gone",
        "in/zh.wav|spk1|EN|你好世界",
        "in/punct.wav|spk1|EN|... !",
        "in/a.flac|spk1|EN|hello again",
    ]
    listing = root / "meta.list"
    listing.write_bytes(("\n".join(lines) + "\n").encode() + "in/latin.wav|spk1|EN|caf\xe9\n".encode("latin-1"))
    return inp, listing


class CountingASR:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, wav16k: np.ndarray, language: str) -> str:
        self.calls += 1
        return "spoken words"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the tiny models are far faster on one thread than on two contended ones
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random HuBERT directory (hidden 32) and the tiny s2 with a random codebook."""
    from transformers import HubertConfig, HubertModel

    from gsvkit.checkpoint import save_checkpoint
    from gsvkit.config import load_config
    from gsvkit.models.s2 import SynthesizerTrn

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )  # fmt: skip
    HubertModel(config).save_pretrained(root / "hubert")
    s2_cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny" / "s2.yaml")
    model = SynthesizerTrn(s2_cfg.model)
    sd = model.state_dict()
    sd["quantizer.vq.layers.0._codebook.embed"] = torch.randn_like(sd["quantizer.vq.layers.0._codebook.embed"])
    save_checkpoint(root / "s2.safetensors", sd, s2_cfg, {})
    return {"hubert": root / "hubert", "s2": root / "s2.safetensors"}


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def config(root: Path, models: dict, **kw) -> PrepareConfig:
    inp, listing = root / "in", root / "meta.list"
    base = {"inputs": [str(inp), str(listing)], "out": str(root / "ds"), "hubert": str(models["hubert"]),
            "s2": str(models["s2"])}  # fmt: skip
    return PrepareConfig(**{**base, **kw})


@pytest.fixture
def prepared(tmp_path, models):
    make_inputs(tmp_path)
    before = tree_digest(tmp_path / "in")
    asr = CountingASR()
    cfg = config(tmp_path, models, upstream_layout=True)
    result = prepare(cfg, text_fn=fake_text, transcriber=asr)
    return tmp_path, cfg, result, asr, before


# ---------------------------------------------------------------------------------------------------- tests
def test_end_to_end_dataset(prepared, models):
    root, cfg, result, asr, before = prepared
    ds = root / "ds"
    items = read_manifest(ds)
    ids = {u.id for u in items}
    assert {"a", "b", "c"} <= ids
    long_ids = sorted(i for i in ids if i.startswith("long_"))
    # 5 s and 4.5 s sentences, and the 25 s one cut again at its quietest point (max 20 s)
    assert len(long_ids) == 4, long_ids
    # long.wav's 4 clips only: latin.wav's .list line is not UTF-8, so latin.wav is set aside, not transcribed
    assert asr.calls == 4
    by_id = {u.id: u for u in items}
    assert by_id["a"].speaker == "spk1" and by_id["a"].text == "hello there" and by_id["c"].text == "the third one"
    assert by_id["c"].speaker == "speaker"
    for u in items:
        assert u.duration <= 20.0 + 1e-6 and u.duration >= 0.6
        info = sf.info(str(ds / u.clip))
        assert info.samplerate == 16000 and info.channels == 1  # the tiny s2 runs at 16 kHz
        assert abs(info.frames / 16000 - u.duration) < 1e-3
        from safetensors.torch import load_file

        ssl = load_file(str(u.feature_path(ds, "hubert")))["ssl"]
        codes = load_file(str(u.feature_path(ds, "semantic")))["codes"]
        # HuBERT's 50 Hz features follow the tiny s2's frame rate (16 kHz / hop 64): one per spectrogram frame
        assert ssl.shape[0] == 32 and ssl.shape[1] == info.frames // 64
        assert codes.dtype == torch.int64 and codes.shape == (ssl.shape[1] // 2,)
        assert int(codes.max()) < 64
    # the long recording's clips are ordered, inside it, and cover its speech
    spans = sorted((by_id[i].start, by_id[i].end) for i in long_ids)
    assert spans[0][0] < 0.55  # a leading silence up to max_sil_kept (0.5 s) stays, as upstream
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    # cuts fall inside the 0.8 s and 1.0 s pauses (speech starts at 6.3 s and 11.8 s)
    assert 5.5 <= spans[0][1] <= 6.3 and 5.5 <= spans[1][0] <= 6.3
    assert 10.8 <= spans[1][1] <= 11.8 and 10.8 <= spans[2][0] <= 11.8
    assert spans[2][1] == spans[3][0]  # the 25 s sentence, cut once at its quietest point
    assert 36.8 - 0.1 <= spans[3][1] <= 37.5
    # split: at least one validation item, stratified by speaker, and recorded in the report
    assert sum(u.split == "val" for u in items) >= 1
    report = json.loads((ds / "report.json").read_text())
    assert report["summary"]["utterances"] == len(items)
    assert report["summary"]["speakers"]["speaker"]["train"]["count"] >= 1
    # the input folder is untouched
    assert tree_digest(root / "in") == before
    info = json.loads((ds / "prepare.json").read_text())
    assert info["config"]["hubert"] == str(models["hubert"]) and info["sample_rate"] == 16000
    assert set(info["models"]) == {"hubert", "s2"} and len(info["inputs"]) >= 9


def test_bad_inputs_are_reported_with_reasons(prepared):
    root, _, result, _, _ = prepared
    reasons = [(Path(d.where.split(" [")[0].split(":")[0]).name, d.stage, d.reason) for d in result.report.dropped]
    text = (root / "ds" / "report.md").read_text()
    expected = {
        ("corrupt.wav", "clips"): "cannot decode",
        ("silent.wav", "clips"): "every sample is zero",
        ("short.wav", "clips"): "too short",
        ("meta.list", "input"): "not found",
        ("zh.wav", "text"): "declared en",
        ("punct.wav", "text"): "nothing pronounceable",
    }
    for (name, stage), fragment in expected.items():
        assert any(r[:2] == (name, stage) and fragment in r[2] for r in reasons), (name, stage, reasons)
    where = [d.where + " " + d.reason for d in result.report.dropped]
    assert any("meta.list:10" in w and "UTF-8" in w for w in where)
    assert any("meta.list:9" in w and "duplicate transcript" in w for w in where)
    for fragment in ("corrupt.wav", "too short", "UTF-8", "declared en"):
        assert fragment in text
    ids = {u.id for u in read_manifest(root / "ds")}
    assert not ids & {"corrupt", "silent", "short", "zh", "punct"}
    assert not any(i.startswith("latin") for i in ids)


def test_rerun_does_no_work(prepared):
    root, cfg, _, _, _ = prepared
    ds = root / "ds"
    mtimes = {p: p.stat().st_mtime_ns for p in ds.rglob("*") if p.is_file() and ".state" not in p.parts}
    asr = CountingASR()
    result = prepare(cfg, text_fn=fake_text, transcriber=asr, featurizer=_fail, quantizer=_fail)
    assert dict(result.report.computed) == {}
    assert asr.calls == 0
    changed = [p for p, m in mtimes.items() if p.stat().st_mtime_ns != m and p.name not in ("report.md", "report.json")]
    assert changed == []


def _fail(*args, **kwargs):
    raise AssertionError("a model was used on a rerun with unchanged inputs")


def test_changed_input_recomputes_only_that_item(prepared):
    root, cfg, _, _, _ = prepared
    sf.write(root / "in" / "a.flac", speech(2.2, 22050, 230, 9), 22050)
    result = prepare(cfg, text_fn=fake_text, transcriber=CountingASR())
    computed = dict(result.report.computed)
    assert computed == {"clips": 1, "hubert": 1, "semantic": 1}, computed  # the text is unchanged: reused
    a = next(u for u in read_manifest(root / "ds") if u.id == "a")
    assert abs(a.duration - 2.2) < 1e-3


def test_removed_input_removes_its_files(prepared):
    root, cfg, _, _, _ = prepared
    (root / "in" / "c.mp3").unlink()
    prepare(cfg, text_fn=fake_text, transcriber=CountingASR())
    ds = root / "ds"
    assert "c" not in {u.id for u in read_manifest(ds)}
    assert not (ds / "clips" / "c.wav").exists() and not list((ds / "features").glob("c.*"))
    assert not (ds / "5-wav32k" / "c.wav").exists()


def test_edit_of_transcripts_list_is_kept(prepared):
    root, cfg, _, _, _ = prepared
    ds = root / "ds"
    lines = (ds / "transcripts.list").read_text(encoding="utf-8").splitlines()
    long_line = next(i for i, line in enumerate(lines) if line.startswith("clips/long_"))
    lines[long_line] = lines[long_line].rsplit("|", 1)[0] + "|corrected words"
    b_line = next(i for i, line in enumerate(lines) if line.startswith("clips/b.wav"))
    lines[b_line] = lines[b_line].rsplit("|", 1)[0] + "|general grievous"
    (ds / "transcripts.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for _ in range(2):  # the edits survive a second rerun too
        result = prepare(cfg, text_fn=fake_text, transcriber=CountingASR())
        texts = {u.id: u.text for u in read_manifest(ds)}
        assert "corrected words" in texts.values() and texts["b"] == "general grievous"
    assert dict(result.report.computed) == {}


@pytest.mark.parametrize("stage", ["clips", "asr", "text", "hubert", "semantic"])
def test_resume_after_interruption(tmp_path, models, monkeypatch, stage):
    make_inputs(tmp_path)
    cfg = config(tmp_path, models)
    calls = {"n": 0}

    def interrupt_on_third(fn):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return fn(*args, **kwargs)

        return wrapped

    from gsvkit.audio.features import HubertFeaturizer
    from gsvkit.checkpoint import load_s2
    from gsvkit.data import prepare as prepare_module

    featurizer = HubertFeaturizer(models["hubert"])
    quantizer = load_s2(models["s2"])
    kw = {
        "text_fn": fake_text,
        "transcriber": CountingASR(),
        "featurizer": featurizer,
        "quantizer": quantizer.extract_latent,
    }
    if stage == "clips":
        monkeypatch.setattr(prepare_module, "cut_recording", interrupt_on_third(prepare_module.cut_recording))
    else:
        name = {"asr": "transcriber", "text": "text_fn", "hubert": "featurizer", "semantic": "quantizer"}[stage]
        kw[name] = interrupt_on_third(kw[name])
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, **kw)
    monkeypatch.undo()
    kw = {"text_fn": fake_text, "transcriber": CountingASR(), "featurizer": featurizer, "quantizer": quantizer}
    result = prepare(cfg, **kw)
    assert result.report.reused[stage] == 2  # the two items finished before the interruption
    again = prepare(cfg, **kw)
    assert dict(again.report.computed) == {}
    assert len(read_manifest(tmp_path / "ds")) == len(result.items) > 0


def test_upstream_layout_round_trip(prepared, tmp_path_factory):
    root, cfg, result, _, _ = prepared
    ds = root / "ds"
    items = {u.id: u for u in read_manifest(ds)}
    names = [line.split("\t")[0] for line in (ds / "2-name2text.txt").read_text(encoding="utf-8").splitlines()]
    assert sorted(names) == sorted(f"{i}.wav" for i in items)
    sem_lines = (ds / "6-name2semantic.tsv").read_text(encoding="utf-8").splitlines()
    assert sem_lines[0] == "item_name\tsemantic_audio" and len(sem_lines) == len(items) + 1
    ssl = torch.load(ds / "4-cnhubert" / "a.wav.pt", weights_only=True)
    assert ssl.dim() == 3 and ssl.shape[:2] == (1, 32)
    assert sf.info(str(ds / "5-wav32k" / "a.wav")).samplerate == 32000
    listed = (ds / "ds.list").read_text(encoding="utf-8").splitlines()
    assert any(line.endswith("5-wav32k/a.wav|spk1|EN|hello there") for line in listed)

    # move the upstream files into a folder of their own and read them back
    up = tmp_path_factory.mktemp("upstream") / "exp"
    up.mkdir()
    for name in ("2-name2text.txt", "6-name2semantic.tsv", "ds.list", "4-cnhubert", "5-wav32k", "3-bert"):
        (shutil.copytree if (ds / name).is_dir() else shutil.copy)(ds / name, up / name)
    back = prepare(PrepareConfig(inputs=[str(up)], out=str(up.parent / "ds2")))
    again = {u.id: u for u in back.items}
    assert set(again) == set(items)
    from safetensors.torch import load_file

    for i, u in items.items():
        v = again[i]
        assert (v.phones, v.norm_text, v.speaker, v.language, v.text) == (
            u.phones,
            u.norm_text,
            u.speaker,
            u.language,
            u.text,
        )
        a = load_file(str(u.feature_path(ds, "hubert")))["ssl"]
        b = load_file(str(v.feature_path(up.parent / "ds2", "hubert")))["ssl"]
        assert torch.equal(a, b)
        ca = load_file(str(u.feature_path(ds, "semantic")))["codes"]
        cb = load_file(str(v.feature_path(up.parent / "ds2", "semantic")))["codes"]
        assert torch.equal(ca, cb)
        assert v.phone_ids and len(v.phone_ids) == len(v.phones)


def test_upstream_folder_refuses_pickled_objects(tmp_path):
    up = tmp_path / "exp"
    (up / "4-cnhubert").mkdir(parents=True)
    (up / "5-wav32k").mkdir()
    sf.write(up / "5-wav32k" / "x.wav", speech(1.0, 32000), 32000)
    (up / "2-name2text.txt").write_text("x.wav\tAA B\tNone\tab\n", encoding="utf-8")
    torch.save({"not": "a tensor", "fn": print}, up / "4-cnhubert" / "x.wav.pt")
    result = prepare(PrepareConfig(inputs=[str(up)], out=str(tmp_path / "ds")))
    assert result.items == []
    assert "not a plain tensor file" in result.report.dropped[0].reason


def test_missing_transcripts_without_asr_is_a_clear_error(tmp_path, models):
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "x.wav", speech(3.0, 16000), 16000)
    with pytest.raises(DataError, match="no transcript.*--asr-model"):
        prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "ds")), text_fn=fake_text)


def test_strict_fails_on_first_bad_item(tmp_path, models):
    make_inputs(tmp_path)
    cfg = config(tmp_path, models, strict=True)
    with pytest.raises(DataError, match="strict"):
        prepare(cfg, text_fn=fake_text, transcriber=CountingASR())


def test_bad_model_directories(tmp_path):
    from transformers import BertConfig, BertModel

    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "x.wav", speech(2.0, 16000), 16000)
    (tmp_path / "in" / "x.txt").write_text("hi there", encoding="utf-8")
    base = {"inputs": [str(tmp_path / "in")], "out": str(tmp_path / "ds")}
    with pytest.raises(CheckpointError, match="not found"):
        prepare(PrepareConfig(**base, hubert=str(tmp_path / "nope")), text_fn=fake_text)
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(CheckpointError, match="'bert' model, not HuBERT"):
        prepare(PrepareConfig(**base, hubert=str(tmp_path / "bert")), text_fn=fake_text)


def test_explicit_validation_ids(tmp_path, models):
    make_inputs(tmp_path)
    cfg = config(tmp_path, models, val=["a", "b"], hubert=None, s2=None)
    result = prepare(cfg, text_fn=fake_text, transcriber=CountingASR())
    assert {u.id for u in result.items if u.split == "val"} == {"a", "b"}
    assert any("no --hubert" in w for w in result.report.warnings)
    with pytest.raises(DataError, match="not in the dataset: nope"):
        prepare(
            config(tmp_path, models, val=["nope"], hubert=None, s2=None), text_fn=fake_text, transcriber=CountingASR()
        )


def test_worker_processes_give_the_same_dataset(tmp_path, models):
    make_inputs(tmp_path)
    one = prepare(config(tmp_path, models, hubert=None, s2=None), text_fn=fake_text, transcriber=CountingASR())
    two = prepare(
        config(tmp_path, models, hubert=None, s2=None, workers=2, out=str(tmp_path / "ds2")),
        text_fn=fake_text,
        transcriber=CountingASR(),
    )
    assert [u.model_dump(exclude={"split"}) for u in one.items] == [u.model_dump(exclude={"split"}) for u in two.items]
    for u in one.items:
        assert (tmp_path / "ds" / u.clip).read_bytes() == (tmp_path / "ds2" / u.clip).read_bytes()


def test_lufs_and_denoise_options(tmp_path, models):
    from gsvkit.audio.io import integrated_loudness, read_audio

    make_inputs(tmp_path)
    base = {"hubert": None, "s2": None, "loudness": "lufs", "target_lufs": -20.0}
    result = prepare(config(tmp_path, models, **base), text_fn=fake_text, transcriber=CountingASR())
    levels = [integrated_loudness(*read_audio(tmp_path / "ds" / u.clip)) for u in result.items]
    assert all(abs(level + 20.0) < 0.3 for level in levels), levels
    denoised = prepare(
        config(tmp_path, models, **base, denoise=True, out=str(tmp_path / "ds_dn")),
        text_fn=fake_text,
        transcriber=CountingASR(),
    )
    assert [u.id for u in denoised.items] == [u.id for u in result.items]
    a, _ = read_audio(tmp_path / "ds" / "clips" / "a.wav")
    b, _ = read_audio(tmp_path / "ds_dn" / "clips" / "a.wav")
    assert a.shape == b.shape and not np.allclose(a, b)


def test_watermarked_recordings_are_refused_unless_allowed(tmp_path, models):
    from gsvkit.safety.watermark import get_watermarker

    inp = tmp_path / "in"
    inp.mkdir()
    # speech-like signals with a wandering pitch: a held note is not judged by the detector (tests/test_safety.py)
    sf.write(inp / "real.wav", speechlike(2.0, 16000, seed=1), 16000)
    sf.write(inp / "made.wav", get_watermarker().apply(speechlike(2.0, 16000, seed=2), 16000), 16000)
    listing = tmp_path / "meta.list"
    listing.write_text("in/real.wav|spk|EN|a real recording\nin/made.wav|spk|EN|a generated one\n", encoding="utf-8")
    base = {"inputs": [str(inp), str(listing)], "hubert": None, "s2": None, "val": ["real"]}
    result = prepare(PrepareConfig(out=str(tmp_path / "ds"), **base), text_fn=fake_text)
    assert {u.id for u in result.items} == {"real"}
    (drop,) = [d for d in result.report.dropped if "made.wav" in d.where]
    assert drop.stage == "clips" and "watermark" in drop.reason and "--allow-synthetic" in drop.reason
    with pytest.raises(DataError, match="watermark"):
        prepare(PrepareConfig(out=str(tmp_path / "ds2"), strict=True, **base), text_fn=fake_text)
    allowed = prepare(PrepareConfig(out=str(tmp_path / "ds3"), allow_synthetic=True, **base), text_fn=fake_text)
    assert {u.id for u in allowed.items} == {"real", "made"}
