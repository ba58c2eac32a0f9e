"""HTTP abuse: over-long paths, chunked over-limit bodies, references in every promised folder, stuck switches."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
import soundfile as sf

import hostile
from gsvkit import limits
from gsvkit.serve.http import ServerSettings, create_app
from serving import SR, FakeBackend, Server

LONG = "a" * 5000 + ".wav"


@pytest.fixture()
def folders(tmp_path):
    models, voices = tmp_path / "models", tmp_path / "voices"
    models.mkdir()
    voices.mkdir()
    sf.write(models / "ref.wav", np.zeros(SR * 4, np.float32), SR)
    (models / "good.safetensors").write_bytes(b"x")
    return models, voices


@pytest.fixture()
def served(folders):
    models, voices = folders
    backend = FakeBackend()
    settings = ServerSettings(models_dir=models, voices_dir=voices, max_text_chars=200, max_upload_bytes=64 * 1024)
    with Server(create_app(backend, settings)) as url:
        yield url, backend


@pytest.mark.parametrize("route, param", [("/tts", "ref_audio_path"), ("/set_gpt_weights", "weights_path")])
def test_five_thousand_character_path_is_400(served, route, param):
    url, _ = served
    params = {"text": "hello", "text_lang": "en", param: LONG if param == "ref_audio_path" else "b" * 5000 + ".pth"}
    r = httpx.get(f"{url}{route}", params=params)
    assert r.status_code == 400, r.text
    assert "too long" in r.json()["message"] and len(r.text) < 600  # the value itself is not echoed whole


def test_over_limit_chunked_body_is_413(served):
    url, _ = served

    def chunks(head: bytes):
        yield head
        for _ in range(40):
            yield b"x" * 8192  # no content-length: the limit is found while reading

    part = b'--zz\r\nContent-Disposition: form-data; name="ref_audio"; filename="a.wav"\r\n\r\n'
    for route, ctype, head in (
        ("/tts", "application/json", b'{"text": "'),
        ("/tts/upload", "multipart/form-data; boundary=zz", part),
    ):
        r = httpx.post(f"{url}{route}", content=chunks(head), headers={"content-type": ctype})
        assert r.status_code == 413, (route, r.status_code, r.text)
        assert "limit" in r.json()["message"]


def test_relative_reference_under_models_dir_is_found(served, folders):
    url, backend = served
    models, voices = folders
    r = httpx.get(f"{url}/tts", params={"text": "hello", "text_lang": "en", "ref_audio_path": "ref.wav"})
    assert r.status_code == 200, r.text
    assert backend.calls[-1]["ref_audio"] == models / "ref.wav"  # voices/ was searched first, then models/
    r = httpx.get(f"{url}/tts", params={"text": "hello", "text_lang": "en", "ref_audio_path": "nope.wav"})
    assert r.status_code == 404
    assert "folders searched (2: voices, models)" in r.json()["message"]


def test_billion_laughs_switch_answers_and_frees_the_slot(tmp_path):
    from gsvkit.checkpoint import load_checkpoint

    models = tmp_path / "models"
    models.mkdir()
    hostile.laughs_checkpoint(models / "laughs.pth")
    (models / "good.safetensors").write_bytes(b"x")
    backend = FakeBackend()
    backend.load_models = lambda s1=None, s2=None: load_checkpoint(s1 or s2)  # the real loader on the file
    with Server(create_app(backend, ServerSettings(models_dir=models))) as url:
        r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "laughs.pth"}, timeout=30)
        assert r.status_code == 400 and "MAX_PICKLE_OBJECTS" in r.json()["detail"]
        backend.load_models = lambda s1=None, s2=None: None
        r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "good.safetensors"}, timeout=30)
        assert r.status_code == 200  # the failed switch released its slot


def test_slow_switch_times_out_and_releases_the_slot_when_done(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    (models / "good.safetensors").write_bytes(b"x")
    release = threading.Event()
    backend = FakeBackend()
    backend.load_models = lambda s1=None, s2=None: release.wait(30)
    monkeypatch.setattr(limits, "MAX_SWITCH_SECONDS", 0.5)
    with Server(create_app(backend, ServerSettings(models_dir=models))) as url:
        r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "good.safetensors"}, timeout=30)
        assert r.status_code == 504 and "MAX_SWITCH_SECONDS" in r.json()["detail"]
        r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "good.safetensors"}, timeout=30)
        assert r.status_code == 503  # still loading: one switch at a time
        release.set()
        backend.load_models = lambda s1=None, s2=None: None
        for _ in range(50):
            r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "good.safetensors"}, timeout=30)
            if r.status_code == 200:
                break
        assert r.status_code == 200


def test_switch_file_size_budget(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    (models / "big.safetensors").write_bytes(b"x" * 2000)
    monkeypatch.setattr(limits, "MAX_SWITCH_FILE_BYTES", 1000)
    backend = FakeBackend()
    with Server(create_app(backend, ServerSettings(models_dir=models))) as url:
        r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "big.safetensors"})
        assert r.status_code == 413 and "MAX_SWITCH_FILE_BYTES" in r.json()["detail"]
    assert backend.loaded == []
