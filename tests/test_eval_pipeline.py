"""`gsv eval` through the real TTS pipeline, with tiny random models (the scores are meaningless; the wiring is not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from gsvkit.eval.evaluate import evaluate_checkpoints, evaluate_voice, items_from_list
from tiny import build_models, speechlike

METRICS = ["mel_distance", "duration_ratio"]  # no resemblyzer/Whisper needed: this checks the plumbing
SHORT = {"max_new_tokens": 20}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_hubert):
    from gsvkit.inference.voice import create_voice

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than the maths
    root = tmp_path_factory.mktemp("evaltts")
    s1, s2 = build_models(root / "run")
    hubert = tiny_hubert
    ref = root / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    voice = create_voice(root / "voice", s1=s1, s2=s2, ref_audio=ref, ref_text="This is my reference voice.",
                         ref_lang="en", consent="synthetic test voice, no person", hubert=hubert).root
    (root / "gt").mkdir()
    for i in range(2):
        sf.write(root / "gt" / f"u{i}.wav", speechlike(1.5, seed=10 + i), 16000)
    lst = root / "heldout.list"
    lst.write_text("gt/u0.wav|spk|EN|Hello there, my friend.\ngt/u1.wav|spk|EN|Good morning to you.\n")
    yield {"root": root, "s1": s1, "s2": s2, "hubert": hubert, "ref": ref, "voice": voice, "list": lst}
    torch.set_num_threads(before)


def test_evaluate_voice_scores_every_sentence_deterministically(setup, tmp_path: Path):
    items = items_from_list(setup["list"])
    report = evaluate_voice(setup["voice"], items, hubert=setup["hubert"], params=SHORT, metrics=METRICS,
                            audio_dir=tmp_path / "audio")
    assert [it.id for it in report.items] == ["u0", "u1"]
    for it in report.items:
        assert it.error is None, it.error
        assert it.mel_distance > 0 and it.duration_ratio > 0 and it.duration_s > 0
        assert it.similarity is None and it.wer is None
        assert Path(it.audio).is_file() and sf.info(it.audio).samplerate == 16000
    assert report.settings["seed"] == 0 and report.settings["max_new_tokens"] == 20
    again = evaluate_voice(setup["voice"], items, hubert=setup["hubert"], params=SHORT, metrics=METRICS)
    assert [it.mel_distance for it in again.items] == [it.mel_distance for it in report.items]


def test_evaluate_checkpoints_with_a_reference(setup):
    items = items_from_list(setup["list"])[:1]
    report = evaluate_checkpoints(setup["s1"], setup["s2"], items, ref_audio=setup["ref"],
                                  ref_text="This is my reference voice.", hubert=setup["hubert"], params=SHORT,
                                  metrics=METRICS, consent="synthetic test clip")
    assert report.items[0].error is None and report.summary["mel_distance"] > 0
    assert report.settings["s1"] == str(setup["s1"])


def test_eval_run_cli_writes_reports(setup, tmp_path: Path):
    from gsvkit.cli import app

    out = tmp_path / "report"
    args = ["eval", "run", str(setup["root"] / "run"), "--data", str(setup["list"]), "--ref", str(setup["ref"]),
            "--ref-text", "This is my reference voice.", "--consent", "synthetic test clip",
            "--hubert", str(setup["hubert"]), "--limit", "1",
            "--metric", "duration_ratio", "--out", str(out), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text())
    assert report["name"] == "run" and report["settings"]["metrics"] == ["duration_ratio"]
    (item,) = report["items"]
    assert item["error"] is None and item["duration_ratio"] > 0 and item["mel_distance"] is None
    assert Path(item["audio"]).is_file() and (out / "eval.md").is_file()


def test_eval_voice_cli_reports_a_missing_voice(setup, tmp_path: Path):
    from gsvkit.cli import app

    result = CliRunner().invoke(app, ["eval", "voice", str(tmp_path / "nope"), "--data", str(setup["list"])])
    assert result.exit_code == 2 and "nope" in result.output


def test_voice_create_warns_when_speaking_needs_a_model_and_eval_voice_exits_non_zero(setup, tmp_path: Path):
    from gsvkit.cli import app

    runner = CliRunner()
    args = ["voice", "create", str(tmp_path / "bare"), "--s1", str(setup["s1"]), "--s2", str(setup["s2"]),
            "--ref", str(setup["ref"]), "--ref-text", "This is my reference voice.", "--ref-lang", "en",
            "--consent", "synthetic test voice, no person", "--language", "en"]
    created = runner.invoke(app, args)
    assert created.exit_code == 0, created.output
    assert "warning:" in created.output and "HuBERT" in created.output and "--hubert" in created.output
    assert "chinese-roberta" not in created.output  # English only: no Chinese BERT needed
    # With --hubert the prompt tokens are stored: nothing is missing, no warning.
    stored = runner.invoke(app, [*args[:2], str(tmp_path / "full"), *args[3:], "--hubert", str(setup["hubert"])])
    assert stored.exit_code == 0 and "prompt tokens stored" in stored.output and "warning" not in stored.output
    # Every sentence fails (no HuBERT to read the reference): the command says so and exits non-zero.
    result = runner.invoke(app, ["eval", "voice", str(tmp_path / "bare"), "--data", str(setup["list"]),
                                 "--metric", "duration_ratio"])
    assert result.exit_code == 1, result.output
    assert "every sentence failed (2 of 2)" in result.output and "HuBERT" in result.output
