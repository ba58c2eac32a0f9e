"""Output watermark, input detection, consent and the audit log (tiny models; espeak-ng/flite for real speech)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from gsvkit.errors import ConsentError, SyntheticAudioError
from tiny import speechlike

CONSENT = "synthetic test clip, no person's voice"
TEXT = "Hello world. This is a test."


@pytest.fixture(scope="module")
def engine_speech(tmp_path_factory):
    """Speech gsvkit did not make: one espeak-ng and one flite sentence (their own sample rates)."""
    if shutil.which("espeak-ng") is None or shutil.which("flite") is None:
        pytest.skip("espeak-ng and flite are needed for real speech")
    root = tmp_path_factory.mktemp("speech")
    a, b = root / "espeak.wav", root / "flite.wav"
    subprocess.run(["espeak-ng", "-w", str(a), "The quick brown fox jumps over the lazy dog."], check=True)
    subprocess.run(["flite", "-t", "She sells sea shells by the sea shore, every morning.", "-o", str(b)], check=True)
    return {"espeak": a, "flite": b}


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_pair, tiny_hubert):
    from gsvkit.inference.voice import create_voice

    root = tmp_path_factory.mktemp("safety")
    s1, s2 = tiny_pair
    hubert = tiny_hubert
    ref = root / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    voice = create_voice(root / "voice", s1=s1, s2=s2, ref_audio=ref, ref_text="This is my reference voice.",
                         ref_lang="en", consent="synthetic test voice", speaker="nobody", hubert=hubert)  # fmt: skip
    return {"root": root, "s1": s1, "s2": s2, "hubert": hubert, "ref": ref, "voice": voice.root}


def _tts(assets, **kw):
    from gsvkit.inference.pipeline import TTS

    return TTS(assets["voice"], hubert=assets["hubert"], **kw)


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ watermark
def test_engine_speech_detected_only_once_marked(engine_speech):
    from gsvkit.audio.io import read_audio
    from gsvkit.safety.watermark import get_watermarker

    wm = get_watermarker()
    for path in engine_speech.values():
        wav, sr = read_audio(path)
        clean = wm.detect(wav, sr)
        marked = wm.apply(wav, sr)
        assert not clean.watermarked and clean.score < 0.2
        assert marked.shape == wav.shape and wm.detect(marked, sr).watermarked
        # Imperceptible in level terms: the residual is well below the speech (measured about 15-16 dB SNR).
        snr = 10 * np.log10(np.sum(wav**2) / np.sum((marked - wav) ** 2))
        assert snr > 10


def _with_noise(x, snr_db, seed):
    n = np.random.default_rng(seed).standard_normal(x.size).astype(np.float32)
    return x + n * np.sqrt(np.mean(x**2) / np.mean(n**2) / 10 ** (snr_db / 10))


def test_marked_speech_with_pauses_is_detected_under_20db_white_noise(engine_speech, tmp_path):
    """Two sentences with 3 s pauses around them, under white noise at 20 dB SNR: once noise covers the pauses they
    carry no mark and dilute the decoder's average (score about 0.37 without noise-floor removal, missed at the old
    0.5). With the floor removed and those frames left out (about 0.76) the marked clip is found at the default
    threshold, while the same clip unmarked, and the noise alone, stay under it; `gsv detect` uses that default."""
    from gsvkit.audio.io import read_audio, resample
    from gsvkit.cli import app
    from gsvkit.safety.watermark import WATERMARK_THRESHOLD, get_watermarker

    wm = get_watermarker()
    gap = np.zeros(3 * 32000, np.float32)
    a, b = (resample(*read_audio(engine_speech[k]), 32000) for k in ("espeak", "flite"))
    clean = np.concatenate([gap, a, gap, b, gap])
    marked = wm.apply(clean, 32000)
    for seed in range(2):
        det = wm.detect(_with_noise(marked, 20.0, seed), 32000)
        assert det.watermarked and det.threshold == WATERMARK_THRESHOLD and det.score > 0.6, det
        assert not wm.detect(_with_noise(clean, 20.0, seed), 32000).watermarked
    noise = np.random.default_rng(5).standard_normal(5 * 32000).astype(np.float32) * 0.05
    assert wm.detect(noise, 32000).score < WATERMARK_THRESHOLD
    sf.write(tmp_path / "noisy.wav", _with_noise(marked, 20.0, 0), 32000)
    r = CliRunner().invoke(app, ["detect", str(tmp_path / "noisy.wav"), "--json"])
    assert r.exit_code == 1, r.output
    assert json.loads(r.output)["threshold"] == WATERMARK_THRESHOLD


def test_every_output_is_marked_and_off_is_recorded(assets, tmp_path):
    from gsvkit.safety.watermark import get_watermarker

    wm = get_watermarker()
    log = tmp_path / "audit.jsonl"
    marked = _tts(assets, audit_log=log).synthesize_result(TEXT, "en", seed=1, max_new_tokens=40)
    plain = _tts(assets, audit_log=log, watermark=False).synthesize_result(TEXT, "en", seed=1, max_new_tokens=40)
    assert marked.watermark.startswith("perth-implicit:") and plain.watermark == "off"
    assert wm.detect(marked.audio, marked.sample_rate).watermarked
    assert not wm.detect(plain.audio, plain.sample_rate).watermarked
    assert [r["watermark"] for r in _lines(log)] == [marked.watermark, "off"]


def test_stream_is_marked(assets, tmp_path):
    from gsvkit.safety.watermark import get_watermarker

    tts = _tts(assets, audit_log=tmp_path / "a.jsonl")
    stream = tts.stream(TEXT, "en", seed=2, max_new_tokens=60)
    audio = np.concatenate(list(stream))
    assert get_watermarker().detect(audio, stream.sample_rate).watermarked
    plain = _tts(assets, audit_log=tmp_path / "a.jsonl", watermark=False).stream(TEXT, "en", seed=2, max_new_tokens=60)
    assert not get_watermarker().detect(np.concatenate(list(plain)), plain.sample_rate).watermarked


def test_gsv_detect_cli(engine_speech, tmp_path):
    from gsvkit.audio.io import read_audio, save_audio
    from gsvkit.cli import app
    from gsvkit.safety.watermark import get_watermarker

    wav, sr = read_audio(engine_speech["espeak"])
    marked = tmp_path / "marked.ogg"  # through a lossy codec too
    save_audio(marked, get_watermarker().apply(wav, sr), sr)
    runner = CliRunner()
    r = runner.invoke(app, ["detect", str(engine_speech["espeak"]), str(marked), "--json"])
    assert r.exit_code == 1, r.output  # 1: at least one file is watermarked
    res = json.loads(r.output)
    assert [x["watermarked"] for x in res] == [False, True] and res[1]["score"] >= 0.5
    r = runner.invoke(app, ["detect", str(engine_speech["flite"])])
    assert r.exit_code == 0 and "not watermarked" in r.output
    r = runner.invoke(app, ["detect", str(tmp_path / "missing.wav")])
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------------------------------------ input
def test_watermarked_reference_refused_unless_allowed(assets, tmp_path):
    from gsvkit.safety.watermark import get_watermarker

    wav = speechlike(4.0)
    marked = tmp_path / "generated.wav"
    sf.write(marked, get_watermarker().apply(wav, 16000), 16000)
    kw = {"ref_audio": marked, "ref_text": "A generated clip.", "ref_lang": "en", "consent": CONSENT}
    with pytest.raises(SyntheticAudioError, match="watermark.*allow_synthetic_reference"):
        _tts(assets).synthesize(TEXT, "en", max_new_tokens=20, **kw)
    sr, audio = _tts(assets, allow_synthetic_reference=True).synthesize(TEXT, "en", max_new_tokens=20, **kw)
    assert audio.size > 0


# ------------------------------------------------------------------------------------------------ consent
def test_zero_shot_needs_consent(assets, tmp_path):
    log = tmp_path / "audit.jsonl"
    tts = _tts(assets, audit_log=log)
    kw = {"ref_audio": assets["ref"], "ref_text": "Some words.", "ref_lang": "en", "max_new_tokens": 20}
    with pytest.raises(ConsentError, match="consent declaration"):
        tts.synthesize(TEXT, "en", **kw)
    with pytest.raises(ConsentError):
        tts.synthesize(TEXT, "en", aux_refs=[assets["ref"]], consent="  yes ", max_new_tokens=20)  # too short
    assert not log.exists()  # refused before anything was synthesized
    tts.synthesize(TEXT, "en", consent=CONSENT, user="tester", **kw)
    (rec,) = _lines(log)
    assert rec["consent"] == CONSENT and rec["voice"] is None and rec["user"] == "tester"
    from gsvkit.inference.voice import sha256_file

    assert rec["reference_sha256"] == [sha256_file(assets["ref"])]


def test_voice_consent_is_structured_and_old_strings_still_load(assets, tmp_path):
    from gsvkit.inference.voice import VOICE_FILE, load_voice

    v = load_voice(assets["voice"])
    c = v.info.provenance.consent
    assert c.statement == "synthetic test voice" and c.speaker == "nobody" and c.recorded_by and c.recorded_at
    old = tmp_path / "old"
    shutil.copytree(assets["voice"], old)
    data = json.loads((old / VOICE_FILE).read_text())
    data["provenance"]["consent"] = "Alice, written consent 2026-01-05"  # how voices were written before
    (old / VOICE_FILE).write_text(json.dumps(data))
    assert load_voice(old).info.provenance.consent.statement == "Alice, written consent 2026-01-05"
    assert "Alice, written consent" in load_voice(old).summary()["consent"]


# ------------------------------------------------------------------------------------------------ audit
def test_one_audit_line_per_synthesis_and_gsv_audit(assets, tmp_path):
    from gsvkit.cli import app
    from gsvkit.safety.audit import sha256_text

    log = tmp_path / "audit.jsonl"
    tts = _tts(assets, audit_log=log)
    tts.synthesize(TEXT, "en", seed=1, max_new_tokens=20)
    tts.synthesize("Another sentence.", "en", seed=2, max_new_tokens=20)
    list(tts.stream(TEXT, "en", seed=3, max_new_tokens=20))
    recs = _lines(log)
    assert [r["kind"] for r in recs] == ["synthesize", "synthesize", "stream"]
    assert recs[0]["text_sha256"] == sha256_text(TEXT) and TEXT not in log.read_text()  # hash, never the text
    assert recs[0]["voice"] == "voice" and recs[0]["voice_s2_sha256"] and recs[0]["seed"] == 1
    assert all(r["time"] and r["user"] and r["watermark"].startswith("perth-implicit:") for r in recs)
    before = log.read_text()
    tts.synthesize(TEXT, "en", seed=4, max_new_tokens=20)
    assert log.read_text().startswith(before)  # appended, earlier lines untouched
    r = CliRunner().invoke(app, ["audit", "--log", str(log), "--json", "--last", "2"])
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["seed"] for x in r.output.splitlines()] == [3, 4]
    r = CliRunner().invoke(app, ["audit", "--log", str(tmp_path / "none.jsonl")])
    assert r.exit_code == 2 and "no audit log" in r.output


def test_synth_cli_records_watermark_off_and_consent(assets, tmp_path):
    from gsvkit.cli import app

    log = tmp_path / "audit.jsonl"
    base = ["synth", "--voice", str(assets["voice"]), "--hubert", str(assets["hubert"]), "-l", "en",
            "--max-new-tokens", "20", "--audit-log", str(log), "Hello there."]  # fmt: skip
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "a.wav"), "--no-watermark"])
    assert r.exit_code == 0, r.output
    assert "watermark off" in r.output
    ref = ["--ref", str(assets["ref"]), "--ref-text", "Some words.", "--ref-lang", "en"]
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "b.wav"), *ref])
    assert r.exit_code == 2 and "consent declaration" in r.output and not (tmp_path / "b.wav").exists()
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "b.wav"), *ref, "--consent", CONSENT])
    assert r.exit_code == 0, r.output
    recs = _lines(log)
    assert [x["watermark"] for x in recs][0] == "off" and recs[1]["watermark"].startswith("perth-implicit:")
    assert recs[0]["consent"] is None and recs[1]["consent"] == CONSENT


def test_voice_create_refuses_a_watermarked_reference(assets, tmp_path):
    from gsvkit.inference.voice import create_voice
    from gsvkit.safety.watermark import get_watermarker

    made = tmp_path / "made.wav"
    sf.write(made, get_watermarker().apply(speechlike(4.0, seed=3), 16000), 16000)
    kw = {"s1": assets["s1"], "s2": assets["s2"], "ref_audio": made, "ref_text": "x", "ref_lang": "en",
          "consent": "synthetic test voice"}  # fmt: skip
    with pytest.raises(SyntheticAudioError, match="--allow-synthetic-reference"):
        create_voice(tmp_path / "v", **kw)
    assert not (tmp_path / "v").exists()
    assert create_voice(tmp_path / "v", allow_synthetic_reference=True, **kw).reference_audio.is_file()


def test_a_steady_sound_is_not_judged_watermarked(engine_speech):
    """A pure low tone or a held harmonic note (frame spectra alike: steadiness about 0.99; speech stays under 0.8)
    drives the speech-trained decoder to high scores, marked or not (the held note scored 0.50 before this rule, over
    the threshold): such a signal is reported as not judgeable (not watermarked, with a note), while speech keeps its
    verdicts."""
    from gsvkit.audio.io import read_audio
    from gsvkit.safety.watermark import get_watermarker

    wm = get_watermarker()
    t = np.arange(3 * 32000) / 32000
    steady = [(0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32) for hz in (110.0, 220.0)]
    t22 = np.arange(int(2.2 * 22050)) / 22050  # harmonics of 230 Hz under a 4 Hz envelope, a little noise
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t22))
    note = 0.15 * envelope * sum(np.sin(2 * np.pi * 230 * k * t22) / k for k in range(1, 8))
    note = (note + 0.005 * np.random.default_rng(9).standard_normal(t22.size)).astype(np.float32)
    for x, sr in [(s, 32000) for s in steady] + [(note, 22050)]:
        for y in (x, wm.apply(x, sr)):
            det = wm.detect(y, sr)
            assert not det.watermarked and det.score == 0.0 and det.note and "steady sound" in det.note
    wav, sr = read_audio(engine_speech["espeak"])
    clean, marked = wm.detect(wav, sr), wm.detect(wm.apply(wav, sr), sr)
    assert clean.note is None and not clean.watermarked and marked.note is None and marked.watermarked
