"""HTTP server with a fake speech backend: parameters, formats, streaming, limits, API key, model switching.

The server runs under real uvicorn on a free loopback port and is exercised with httpx.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

from gsvkit.serve.http import ServerSettings, create_app
from serving import SR, FakeBackend, Server


@pytest.fixture()
def models_dir(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    (d / "good.safetensors").write_bytes(b"x")
    (d / "sub").mkdir()
    (d / "sub" / "g2.ckpt").write_bytes(b"x")
    outside = tmp_path / "secret.ckpt"
    outside.write_bytes(b"x")
    (d / "link.ckpt").symlink_to(outside)
    ref = d / "ref.wav"
    sf.write(ref, np.zeros(SR * 4, np.float32), SR)
    return d


@pytest.fixture()
def served(models_dir):
    backend = FakeBackend()
    settings = ServerSettings(models_dir=models_dir, max_text_chars=200, max_upload_bytes=64 * 1024)
    with Server(create_app(backend, settings)) as url:
        yield url, backend


def test_get_and_post_wav_raw_ogg(served):
    url, backend = served
    r = httpx.get(f"{url}/tts", params={"text": "hello world", "text_lang": "en", "top_k": 5, "seed": 7})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    wav, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert sr == SR and len(wav) == len("hello world") * SR // 100
    assert backend.calls[-1]["top_k"] == 5 and backend.calls[-1]["seed"] == 7

    r = httpx.post(f"{url}/tts", json={"text": "hello", "text_lang": "en", "media_type": "raw", "seed": -1})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/raw"
    pcm = np.frombuffer(r.content, dtype="<i2")
    assert len(pcm) == 5 * SR // 100 and np.abs(pcm).max() > 10000
    assert backend.calls[-1]["seed"] is None  # -1 = random, as upstream

    r = httpx.post(f"{url}/tts", json={"text": "hello", "text_lang": "en", "media_type": "ogg"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/ogg"
    ogg, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert sr == SR and abs(len(ogg) - 5 * SR // 100) < 10


def test_upstream_parameter_names_are_mapped(served):
    url, backend = served
    body = {
        "text": "hi there",
        "text_lang": "EN".lower(),
        "prompt_text": "a prompt",
        "prompt_lang": "en",
        "text_split_method": "cut1",
        "speed_factor": 1.25,
        "fragment_interval": 0.1,
        "repetition_penalty": 1.5,
        "batch_size": 2,
        "parallel_infer": False,
        "sample_steps": 8,
    }
    assert httpx.post(f"{url}/tts", json=body).status_code == 200
    call = backend.calls[-1]
    assert call["split"] == "cut1" and call["speed"] == 1.25 and call["fragment_interval"] == 0.1
    assert call["ref_text"] == "a prompt" and call["ref_lang"] == "en" and call["batch_size"] == 2


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"top_k": 0}, "top_k"),
        ({"temperature": -1}, "temperature"),
        ({"speed_factor": 100}, "speed_factor"),
        ({"media_type": "aac"}, "media_type"),
        ({"text_split_method": "cut9"}, "text_split_method"),
        ({"text": ""}, "text"),
        ({"streaming_mode": 7}, "streaming_mode"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_parameters_are_named(served, bad, field):
    url, _ = served
    r = httpx.post(f"{url}/tts", json={"text": "hello", "text_lang": "en", **bad})
    assert r.status_code == 400
    assert field in r.json()["message"]


def test_backend_errors_are_400_json(served):
    url, _ = served
    r = httpx.get(f"{url}/tts", params={"text": "hello", "text_lang": "xx"})
    assert r.status_code == 400
    assert "not supported" in r.json()["detail"]


def test_text_limit(served):
    url, _ = served
    r = httpx.post(f"{url}/tts", json={"text": "a" * 100_000, "text_lang": "en"})
    assert r.status_code == 413 and "200" in r.json()["message"]


def test_streaming_wav_response(served):
    url, backend = served
    with httpx.stream(
        "POST", f"{url}/tts", json={"text": "x" * 50, "text_lang": "en", "streaming_mode": True, "min_chunk_length": 8}
    ) as r:
        assert r.status_code == 200 and r.headers["x-sample-rate"] == str(SR)
        parts = list(r.iter_raw())
    data = b"".join(parts)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF  # unknown length: a stream
    pcm = np.frombuffer(data[44:], dtype="<i2")
    assert len(pcm) == 50 * SR // 100
    assert backend.calls[-1]["stream"]["chunk_tokens"] == 8
    assert backend.closed == 1


def test_streaming_raw_and_ogg(served):
    url, _ = served
    r = httpx.get(f"{url}/tts", params={"text": "y" * 30, "text_lang": "en", "streaming_mode": 2, "media_type": "raw"})
    assert r.status_code == 200 and len(r.content) == 2 * 30 * SR // 100
    r = httpx.get(f"{url}/tts", params={"text": "y" * 30, "text_lang": "en", "streaming_mode": 3, "media_type": "ogg"})
    assert r.status_code == 200 and r.content[:4] == b"OggS"


def test_stream_errors_before_audio_are_400(served):
    url, _ = served
    r = httpx.post(f"{url}/tts", json={"text": "hello", "text_lang": "xx", "streaming_mode": 1})
    assert r.status_code == 400


def test_model_switch_is_confined(served, models_dir, tmp_path):
    url, backend = served
    r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "good.safetensors"})
    assert r.status_code == 200 and r.json()["message"] == "success"
    assert backend.loaded[-1] == (models_dir / "good.safetensors", None)
    r = httpx.get(f"{url}/set_sovits_weights", params={"weights_path": str(models_dir / "sub" / "g2.ckpt")})
    assert r.status_code == 200 and backend.loaded[-1] == (None, models_dir / "sub" / "g2.ckpt")
    n = len(backend.loaded)
    for evil in ["../secret.ckpt", str(tmp_path / "secret.ckpt"), "link.ckpt", "sub/../../secret.ckpt", "/etc/passwd"]:
        r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": evil})
        assert r.status_code in (400, 403), evil
    assert httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "nope.ckpt"}).status_code == 404
    assert httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "ref.wav"}).status_code == 400
    assert len(backend.loaded) == n
    r = httpx.post(
        f"{url}/set_weights", json={"gpt_weights_path": "good.safetensors", "sovits_weights_path": "sub/g2.ckpt"}
    )
    assert r.status_code == 200 and backend.loaded[-1][0] is not None and backend.loaded[-1][1] is not None


def test_reference_paths_are_confined(served, models_dir, tmp_path):
    url, backend = served
    r = httpx.get(f"{url}/tts", params={"text": "hello", "text_lang": "en", "ref_audio_path": "ref.wav"})
    assert r.status_code == 200 and backend.calls[-1]["ref_audio"] == models_dir / "ref.wav"
    outside = tmp_path / "other.wav"
    sf.write(outside, np.zeros(SR * 4, np.float32), SR)
    r = httpx.get(f"{url}/tts", params={"text": "hello", "text_lang": "en", "ref_audio_path": str(outside)})
    assert r.status_code == 403


def test_upload_and_upload_limit(served):
    url, backend = served
    buf = io.BytesIO()
    sf.write(buf, np.zeros(SR, np.float32), SR, format="WAV")
    files = {"ref_audio": ("ref.wav", buf.getvalue(), "audio/wav")}
    r = httpx.post(f"{url}/tts/upload", data={"text": "hello", "text_lang": "en", "prompt_text": "hi"}, files=files)
    assert r.status_code == 200, r.text
    stored = backend.calls[-1]["ref_audio"]
    assert Path(stored).read_bytes() == buf.getvalue() and backend.calls[-1]["ref_text"] == "hi"
    big = {"ref_audio": ("ref.wav", b"\0" * (200 * 1024), "audio/wav")}
    r = httpx.post(f"{url}/tts/upload", data={"text": "hello", "text_lang": "en"}, files=big)
    assert r.status_code == 413


def test_health_openapi_and_voices(served):
    url, _ = served
    h = httpx.get(f"{url}/health").json()
    assert h["status"] == "ok" and h["jobs"]["capacity"] == 5
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/tts", "/tts/upload", "/set_gpt_weights", "/set_sovits_weights", "/voices", "/health"} <= set(
        spec["paths"]
    )
    assert httpx.get(f"{url}/docs").status_code == 200
    assert httpx.get(f"{url}/voices").json()["voices"] == []


def test_api_key(models_dir):
    backend = FakeBackend()
    with Server(create_app(backend, ServerSettings(models_dir=models_dir, api_key="s3cret"))) as url:
        q = {"text": "hello", "text_lang": "en"}
        assert httpx.get(f"{url}/tts", params=q).status_code == 401
        assert httpx.get(f"{url}/tts", params=q, headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.get(f"{url}/tts", params=q, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{url}/tts", params=q, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "good.safetensors"}).status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200


def test_bounded_queue_answers_503(models_dir):
    backend = FakeBackend()
    backend.release.clear()  # every synthesis blocks until released
    settings = ServerSettings(models_dir=models_dir, max_jobs=1, max_queue=2)
    with Server(create_app(backend, settings)) as url:
        results: list[int] = []

        def call():
            results.append(httpx.get(f"{url}/tts", params={"text": "hi", "text_lang": "en"}, timeout=30).status_code)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        assert backend.entered.acquire(timeout=10)  # one is running, two are waiting
        deadline = time.time() + 10
        while httpx.get(f"{url}/health").json()["jobs"]["waiting"] < 2 and time.time() < deadline:
            time.sleep(0.02)
        r = httpx.get(f"{url}/tts", params={"text": "hi", "text_lang": "en"})
        assert r.status_code == 503 and "Retry-After" in r.headers
        backend.release.set()
        for t in threads:
            t.join(30)
        assert results == [200, 200, 200]
        assert httpx.get(f"{url}/health").json()["jobs"] == {"running": 0, "waiting": 0, "capacity": 3}


def test_voices_listing(tmp_path):
    voices = tmp_path / "voices"
    good = voices / "alice"
    good.mkdir(parents=True)
    for f in ("s1.safetensors", "s2.safetensors"):
        (good / f).write_bytes(b"x")
    sf.write(good / "reference.wav", np.zeros(SR * 4, np.float32), SR)
    info = {
        "name": "alice",
        "version": "v2",
        "reference": {"audio": "reference.wav", "text": "hello", "language": "en"},
        "languages": ["en"],
        "provenance": {"consent": "signed form 2026-01-01", "created": "2026-01-01T00:00:00+00:00", "tool": "t"},
    }
    (good / "voice.json").write_text(json.dumps(info))
    bad = voices / "broken"
    bad.mkdir()
    (bad / "voice.json").write_text("{")
    with Server(create_app(FakeBackend(), ServerSettings(voices_dir=voices))) as url:
        body = httpx.get(f"{url}/voices").json()
        assert [v["name"] for v in body["voices"]] == ["alice"]
        assert body["voices"][0]["consent"].startswith("signed")
        assert "broken" in body["errors"]
        r = httpx.get(f"{url}/tts", params={"text": "hello", "text_lang": "en", "voice": "nobody"})
        assert r.status_code == 400 and "nobody" in r.json()["detail"]


def test_no_shared_state_between_apps(models_dir):
    a = create_app(FakeBackend(), ServerSettings(max_text_chars=10))
    b = create_app(FakeBackend(), ServerSettings(max_text_chars=20))
    assert a.state.settings.max_text_chars == 10 and b.state.settings.max_text_chars == 20
    assert a.state.gate is not b.state.gate
    assert os.environ.get("GSVKIT_API_KEY") is None


def test_client_disconnect_frees_the_job_slot(models_dir):
    backend = FakeBackend()
    backend.delay = 0.2  # a slow stream: 0.2 s per chunk
    with Server(create_app(backend, ServerSettings(models_dir=models_dir, max_jobs=1, max_queue=0))) as url:
        with httpx.stream("POST", f"{url}/tts", json={"text": "z" * 100, "text_lang": "en", "streaming_mode": 1}) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # the header, then hang up mid-stream
        deadline = time.time() + 20
        while httpx.get(f"{url}/health").json()["jobs"]["running"] and time.time() < deadline:
            time.sleep(0.1)
        assert httpx.get(f"{url}/health").json()["jobs"] == {"running": 0, "waiting": 0, "capacity": 1}
        assert backend.closed == 1
        r = httpx.get(f"{url}/tts", params={"text": "ok", "text_lang": "en"})
        assert r.status_code == 200  # the slot is free again


def test_max_jobs_auto_is_one_job_per_core_splitting_the_cores(monkeypatch):
    from typer.testing import CliRunner

    from gsvkit.cli import app
    from gsvkit.serve.cli import serve_jobs

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert serve_jobs("auto", None, "cpu") == (4, 4, 4)  # the default: 4 jobs at most, splitting 4 cores
    assert serve_jobs("auto", 2, "cpu") == (2, 2, None)  # --threads fixes each job's threads
    assert serve_jobs("auto", 8, "cpu") == (1, 8, None)
    assert serve_jobs("auto", None, "cpu", "onnx") == (4, 1, None)  # onnxruntime sessions fix their threads
    assert serve_jobs("auto", None, "cuda") == (1, None, None)
    assert serve_jobs("3", None, "cpu") == (3, None, None)  # a number is taken as given
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert serve_jobs("auto", None, "cpu") == (1, 1, None)
    for bad in ("0", "-1", "two"):
        r = CliRunner().invoke(app, ["serve", "--max-jobs", bad])
        assert r.exit_code == 2 and "--max-jobs" in r.output and "auto" in r.output, r.output


def test_running_jobs_split_the_shared_cores(models_dir):
    """Each job sets its worker thread's torch threads to shared_cores // running when it starts, and a stream again
    before each chunk: a lone request gets every core, two at once half each."""

    class Recording(FakeBackend):
        def __init__(self):
            super().__init__()
            self.threads: list[int] = []
            self.chunk_threads: list[int] = []

        def synthesize(self, text, lang, **kw):
            self.threads.append(torch.get_num_threads())
            return super().synthesize(text, lang, **kw)

        def stream(self, text, lang, stream=None, **kw):
            inner = super().stream(text, lang, stream, **kw)
            backend = self

            class Chunks(type(inner)):
                def __iter__(self):
                    for chunk in inner:
                        backend.chunk_threads.append(torch.get_num_threads())
                        yield chunk

            return Chunks([], inner.sample_rate, inner._on_close)

    before = torch.get_num_threads()
    backend = Recording()
    settings = ServerSettings(models_dir=models_dir, max_jobs=2, max_queue=2, shared_cores=4)
    try:
        with Server(create_app(backend, settings)) as url:
            assert httpx.get(f"{url}/tts", params={"text": "ok", "text_lang": "en"}).status_code == 200
            assert backend.entered.acquire(timeout=5)  # that request's entry, counted
            backend.release.clear()  # the next two are held inside synthesize until released
            codes: list[int] = []
            clients = [threading.Thread(target=lambda: codes.append(
                httpx.get(f"{url}/tts", params={"text": "hold", "text_lang": "en"}, timeout=30).status_code))
                for _ in range(2)]  # fmt: skip
            for c in clients:
                c.start()
                assert backend.entered.acquire(timeout=20)  # this one runs before the next is sent
            backend.release.set()
            for c in clients:
                c.join(30)
            assert codes == [200, 200]
            assert backend.threads == [4, 4, 2]  # alone: 4; the first of two started alone: 4; the second: 2
            backend.release.clear()
            # a stream alone takes 4; once a second job runs beside it, its next chunks take 2
            backend.delay = 0.3  # per chunk; 8 chunks
            hold = {"text": "hold", "text_lang": "en"}
            blocker = threading.Thread(target=lambda: httpx.get(f"{url}/tts", params=hold, timeout=30))
            body = {"text": "z" * 40, "text_lang": "en", "streaming_mode": 1}
            with httpx.stream("POST", f"{url}/tts", json=body, timeout=30) as r:
                parts = r.iter_raw()
                next(parts)  # the header: the first chunk is on its way
                while not backend.chunk_threads:
                    time.sleep(0.01)
                blocker.start()
                assert backend.entered.acquire(timeout=20)
                rest = b"".join(parts)
            backend.release.set()
            blocker.join(30)
            assert r.status_code == 200 and len(rest) > 0
            assert backend.chunk_threads[0] == 4 and backend.chunk_threads[-1] == 2, backend.chunk_threads
        torch.set_num_threads(3)  # threads made from now on start with 3; without shared_cores, jobs keep them
        unshared = Recording()
        with Server(create_app(unshared, ServerSettings(models_dir=models_dir, max_jobs=2))) as url:
            assert httpx.get(f"{url}/tts", params={"text": "ok", "text_lang": "en"}).status_code == 200
        assert unshared.threads == [3]
    finally:
        torch.set_num_threads(before)


def test_serve_command_splits_the_cores_by_default(monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from gsvkit.cli import app
    from gsvkit.models.s1 import step_graph

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(step_graph, "_EXTRA_SESSIONS", ())
    monkeypatch.setattr("gsvkit.serve.cli._tts", lambda *a, **kw: FakeBackend())
    seen: list[tuple] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(
        (app.state.settings, torch.get_num_threads(), step_graph._EXTRA_SESSIONS)))  # fmt: skip
    before = torch.get_num_threads()
    try:
        for args in ([], ["--threads", "1"]):
            r = CliRunner().invoke(app, ["serve", *args])
            assert r.exit_code == 0, r.output
    finally:
        torch.set_num_threads(before)
    (auto, threads, extra), (fixed, fixed_threads, _) = seen
    assert (auto.max_jobs, auto.shared_cores, threads, extra) == (2, 2, 2, (1, 2))  # models load on both cores
    assert (fixed.max_jobs, fixed.shared_cores, fixed_threads) == (2, None, 1)
