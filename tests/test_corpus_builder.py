"""The synthetic corpus builder (benchmarks/corpus): sentence filtering, and a real 2-sentence build per free voice.

The build needs the Debian packages of benchmarks/corpus/install.sh (CI installs them); it skips, naming what is
missing, without them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

CORPUS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "corpus"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"corpus_{name}", CORPUS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_sentence_filter_keeps_plain_sentences_only():
    texts = _load("texts")
    assert texts.clean("  And God said,\nLet there be light: and there was light. ") == (
        "And God said, Let there be light: and there was light."
    )
    assert texts.clean("The LORD is my shepherd; I shall not want.") == "The Lord is my shepherd; I shall not want."
    for bad in ["Too short.", "Call 555-1234 now, before it is too late.", "No final punctuation in this one",
                "A quote attributed -- to somebody famous.", "Symbols like $ and # are not read alike."]:
        assert texts.clean(bad) is None, bad


def test_same_human_groups_are_declared():
    voices = _load("voices")
    by_name = {v.name: v for v in voices.VOICES}
    assert len(by_name) == len(voices.VOICES)
    assert {n for n, v in by_name.items() if v.human == "slt"} == {"festival_slt", "flite_slt", "rhvoice_slt"}
    assert by_name["rhvoice_alan"].human == by_name["flite_awb"].human == "awb"
    assert by_name["mbrola_en1"].human == by_name["festival_rab"].human == "rab"
    assert all(v.free for v in voices.select(None, non_free=False))
    with pytest.raises(SystemExit, match="non-free"):
        voices.select(["rhvoice_slt"], non_free=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    missing = [exe for exe in ("espeak-ng", "flite", "text2wave", "bible") if shutil.which(exe) is None]
    if missing or not Path("/usr/share/games/fortunes/fortunes").is_file():
        pytest.skip(f"corpus packages missing ({', '.join(missing) or 'fortunes'}): run benchmarks/corpus/install.sh")
    out = tmp_path_factory.mktemp("corpus")
    cmd = [sys.executable, str(CORPUS_DIR / "build_corpus.py"), "--out", str(out), "--sentences", "2",
           "--hold-out", "slt", "--jobs", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_build_writes_a_valid_list_and_speakers_json(corpus: Path):
    voices = _load("voices")
    meta = json.loads((corpus / "speakers.json").read_text())
    installed = {v.name for v in voices.select(None, non_free=False) if voices.available(v) is None}
    assert set(meta["speakers"]) == installed
    assert {"festival_slt", "flite_slt"} <= set(meta["humans"]["slt"])
    lines = (corpus / "corpus.list").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 * len(installed)
    texts = []
    for line in lines:
        path, speaker, lang, text = line.split("|")
        assert lang == "EN" and speaker in installed and text.strip() == text and text
        assert path == f"wavs/{speaker}/{Path(path).name}"
        info = sf.info(str(corpus / path))
        assert info.channels == 1 and info.subtype == "PCM_16" and info.frames / info.samplerate > 0.5
        assert info.samplerate == meta["speakers"][speaker]["sample_rate"]
        texts.append(text)
    assert len(set(texts)) == len(texts), "every speaker reads its own sentences"
    for s in meta["speakers"].values():
        assert s["utterances"] == 2 and s["seconds"] > 1.0 and s["human"] in meta["humans"]


def test_held_out_human_is_held_out_across_engines(corpus: Path):
    meta = json.loads((corpus / "speakers.json").read_text())
    held = {ln.split("|")[1] for ln in (corpus / "heldout.list").read_text().splitlines()}
    train = {ln.split("|")[1] for ln in (corpus / "train.list").read_text().splitlines()}
    assert held == set(meta["humans"]["slt"]) == set(meta["held_out"]["speakers"])
    assert not held & train and held | train == set(meta["speakers"])


def test_rebuild_keeps_existing_audio(corpus: Path):
    wav = next((corpus / "wavs").rglob("*.wav"))
    before = wav.stat().st_mtime_ns
    cmd = [sys.executable, str(CORPUS_DIR / "build_corpus.py"), "--out", str(corpus), "--sentences", "2",
           "--voices", wav.parent.name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert wav.stat().st_mtime_ns == before
    assert len((corpus / "corpus.list").read_text().splitlines()) == 2
