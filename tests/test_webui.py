"""Web UI handlers without a browser (the browser test is tests/browser/)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf
import torch

from tiny import build_models, speechlike

gr = pytest.importorskip("gradio")

from gsvkit.errors import GsvError  # noqa: E402
from gsvkit.serve.webui import LOADED, TrainingJob, WebApp, build_ui  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_hubert):
    from gsvkit.inference.pipeline import TTS
    from gsvkit.inference.voice import create_voice

    root = tmp_path_factory.mktemp("ui")
    s1, s2 = build_models(root / "run" / "s1")
    (root / "run" / "s2").mkdir()
    s2.rename(root / "run" / "s2" / "s2.safetensors")
    s2 = root / "run" / "s2" / "s2.safetensors"
    hubert = tiny_hubert
    ref = root / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    voices = root / "voices"
    create_voice(voices / "kim", s1=s1, s2=s2, ref_audio=ref, ref_text="Kim speaking here.", ref_lang="en",
                 consent="synthetic", hubert=hubert, languages=["en", "ja"])  # fmt: skip
    tts = TTS(s1=s1, s2=s2, hubert=hubert)
    return WebApp(tts, voices_dir=voices, work_dir=root / "work"), root


def args(voice="kim", text="Hello from the page.", ref=None, ref_text="Kim speaking here.", seed=3, consent=""):
    return [voice, text, "en", ref, ref_text, "en", 15, 1.0, 1.0, 1.35, 1.0, seed, "cut5", 0.3, consent]


def test_voices_and_defaults(app):
    ui, _ = app
    assert ui.voice_names() == [LOADED, "kim"]
    text, lang, langs = ui.voice_defaults("kim")
    assert text == "Kim speaking here." and lang == "en" and langs == ["en", "ja"]
    assert ui.voice_defaults(LOADED)[2][0] == "auto"


def test_synthesize_and_stream(app):
    ui, root = app
    (sr, pcm), info = ui.synthesize(*args())
    assert sr == 16000 and pcm.dtype == np.int16 and len(pcm) > 0.3 * sr and "seed 3" in info
    (_, again), _ = ui.synthesize(*args())
    np.testing.assert_array_equal(pcm, again)
    chunks = list(ui.stream(*args()))
    assert len(chunks) > 1 and all(c[0] == 16000 for c in chunks)
    with pytest.raises(gr.Error, match="consent declaration"):
        ui.synthesize(*args(ref=str(root / "ref.wav"), ref_text="Another transcript."))
    (_, other), info = ui.synthesize(*args(ref=str(root / "ref.wav"), ref_text="Another transcript.",
                                           consent="synthetic test clip"))  # fmt: skip
    assert len(other) > 0 and "watermark perth-implicit:" in info


def test_errors_are_shown_not_raised_raw(app):
    ui, _ = app
    with pytest.raises(gr.Error, match="empty"):
        ui.synthesize(*args(text=""))
    with pytest.raises(gr.Error, match="reference"):
        ui.synthesize(*args(voice=LOADED))  # loaded models without a voice: no default reference
    with pytest.raises(gr.Error, match="no voice named"):
        ui.synthesize(*args(voice="nobody"))


def test_training_job_states():
    job = TrainingJob()
    job.start(lambda j: j.set("working"), run_dir=None)
    job.thread.join(10)
    assert job.state == "done"

    def boom(j):
        raise GsvError("dataset is empty")

    job.start(boom, run_dir=None)
    job.thread.join(10)
    assert job.state == "failed" and "dataset is empty" in job.message


def test_curves_and_export(app, tmp_path):
    ui, root = app
    run = root / "run"
    csv = run / "s2" / "logs" / "csv" / "version_0"
    csv.mkdir(parents=True)
    (csv / "metrics.csv").write_text("epoch,step,val/mel_l1\n0,10,0.9\n1,20,0.7\n", encoding="utf-8")
    ui.job.run_dir = run
    df = ui.curves()
    assert list(df["value"]) == [0.9, 0.7] and set(df["metric"]) == {"s2 val/mel_l1"}
    status, _ = ui.training_status()
    assert str(run) in status
    msg, update = ui.export_voice("fresh", str(root / "ref.wav"), "Kim speaking here.", "en", "synthetic", "")
    assert "fresh" in msg and "fresh" in ui.voice_names()
    with pytest.raises(gr.Error, match="consent"):
        ui.export_voice("fresh2", str(root / "ref.wav"), "x", "en", " ", "")


def test_training_needs_files(app):
    ui, _ = app
    with pytest.raises(gr.Error, match="upload"):
        ui.start_training([], "exp", "en", "spk", "", "", "", "", "", "", 1, 1)
    with pytest.raises(gr.Error, match="letters"):
        ui.start_training(["a.wav"], "../x", "en", "spk", "", "", "", "", "", "", 1, 1)


def test_page_builds(app):
    ui, _ = app
    blocks = build_ui(ui.tts, voices_dir=ui.voices_dir, work_dir=ui.work_dir)
    assert isinstance(blocks, gr.Blocks)
    time.sleep(0)


def test_training_status_counts_the_prepared_utterances(app, monkeypatch, tmp_path):
    import gsvkit.data.prepare as prepare_mod
    import gsvkit.training.fit as fit
    from gsvkit.data.prepare import PrepareResult

    ui, _ = app
    seen = []
    monkeypatch.setattr(prepare_mod, "prepare", lambda cfg: PrepareResult(tmp_path, ["u1", "u2", "u3"], None))
    monkeypatch.setattr(fit, "train_s2", lambda *a, **k: seen.append(ui.job.message))
    monkeypatch.setattr(fit, "train_s1", lambda *a, **k: None)
    ui.start_training([str(tmp_path / "a.wav")], "count", "en", "spk", "", "", "", "", "", "", 1, 1)
    ui.job.thread.join(10)
    assert ui.job.state == "done", ui.job.message
    assert seen == ["dataset: 3 utterances"]


def test_sample_steps_control_reaches_the_synthesis_only_when_set(app):
    ui, _ = app
    assert "sample_steps" not in ui._kwargs(*args(), 0)  # 0: the family's default decides
    assert ui._kwargs(*args(), 4)["sample_steps"] == 4
    with pytest.raises(Exception, match="sample_steps"):  # out of range is refused like any other parameter
        ui.synthesize(*args(), 500)
