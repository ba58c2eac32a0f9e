"""The real server: TTS with tiny models under uvicorn on a loopback port, driven with httpx."""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

from gsvkit.serve.http import ServerSettings, create_app
from serving import Server
from tiny import build_models, speechlike

TEXT = "Hello from the server. It speaks in chunks."
CONSENT = "synthetic test clip, no person's voice"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_hubert):
    from gsvkit.inference.pipeline import TTS
    from gsvkit.inference.voice import create_voice

    root = tmp_path_factory.mktemp("e2e")
    models = root / "models"
    s1, s2 = build_models(models / "base")
    other_s1, other_s2 = build_models(models / "other", seed=1)
    hubert = tiny_hubert
    ref = models / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    create_voice(models / "voices" / "amy", s1=s1, s2=s2, ref_audio=ref, ref_text="This is Amy.", ref_lang="en",
                 consent="synthetic", hubert=hubert)  # fmt: skip
    tts = TTS(models / "voices" / "amy", hubert=hubert, audit_log=root / "audit.jsonl")
    settings = ServerSettings(models_dir=models, voices_dir=models / "voices", max_queue=2)
    with Server(create_app(tts, settings)) as url:
        yield {"url": url, "tts": tts, "models": models, "other": (other_s1, other_s2), "ref": ref,
               "audit": root / "audit.jsonl"}  # fmt: skip


def body(**kw):
    return {"text": TEXT, "text_lang": "en", "seed": 3, "noise_scale": 0.0, **kw}


def test_tts_wav_and_voice(served):
    url = served["url"]
    r = httpx.post(f"{url}/tts", json=body(), timeout=120)
    assert r.status_code == 200, r.text
    wav, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert sr == 16000 and len(wav) > 2 * int(0.3 * sr)
    direct = served["tts"].synthesize(TEXT, "en", seed=3, noise_scale=0.0)[1]
    assert len(wav) == len(direct)
    np.testing.assert_allclose(wav, direct, atol=2 / 32767)  # 16-bit rounding only
    r2 = httpx.get(f"{url}/tts", params={**body(), "voice": "amy", "media_type": "raw"}, timeout=120)
    assert r2.status_code == 200 and len(r2.content) == 2 * len(wav)
    v = httpx.get(f"{url}/voices").json()["voices"]
    assert [x["name"] for x in v] == ["amy"]


def test_real_streaming(served):
    url = served["url"]
    arrivals = []
    data = b""
    t0 = time.perf_counter()
    with httpx.stream("POST", f"{url}/tts", json=body(streaming_mode=True, min_chunk_length=8), timeout=120) as r:
        assert r.status_code == 200
        for part in r.iter_raw():
            arrivals.append(time.perf_counter() - t0)
            data += part
    assert data[:4] == b"RIFF" and len(arrivals) > 3
    pcm = np.frombuffer(data[44:], dtype="<i2").astype(np.float32) / 32767
    whole = served["tts"].synthesize(TEXT, "en", seed=3, noise_scale=0.0)[1]
    assert pcm.shape == whole.shape
    # Each chunk carries its own watermark, so the stream is compared with the same stream made in Python (the
    # unmarked stream's closeness to whole synthesis is shown in test_inference_pipeline).
    from gsvkit.serve.schemas import TTSRequest

    chunking = TTSRequest(**body(streaming_mode=True, min_chunk_length=8)).stream_kwargs()
    direct = np.concatenate(list(served["tts"].stream(TEXT, "en", seed=3, noise_scale=0.0, stream=chunking)))
    np.testing.assert_allclose(pcm, np.clip(direct, -1, 1), atol=2 / 32767)  # 16-bit rounding only


def test_upload_and_bad_reference(served):
    url = served["url"]
    files = {"ref_audio": ("r.wav", served["ref"].read_bytes(), "audio/wav")}
    form = {"text": "Uploaded.", "text_lang": "en", "prompt_text": "This is Amy.", "prompt_lang": "en"}
    r = httpx.post(f"{url}/tts/upload", data=form, files=files, timeout=120)
    assert r.status_code == 403 and "consent declaration" in r.json()["detail"]  # zero-shot needs a declaration
    r = httpx.post(f"{url}/tts/upload", data={**form, "consent": CONSENT}, files=files, timeout=120)
    assert r.status_code == 200, r.text
    buf = io.BytesIO()
    sf.write(buf, speechlike(1.0), 16000, format="WAV")
    files = {"ref_audio": ("short.wav", buf.getvalue(), "audio/wav")}
    form = {"text": "Hi there.", "text_lang": "en", "prompt_text": "x", "prompt_lang": "en", "consent": CONSENT}
    r = httpx.post(f"{url}/tts/upload", data=form, files=files, timeout=120)
    assert r.status_code == 400 and "3-10 s" in r.json()["detail"]
    r = httpx.get(f"{url}/tts", params={"text": "Hi there.", "text_lang": "ko", "prompt_lang": "xx"}, timeout=60)
    assert r.status_code == 400


def test_switch_while_synthesizing(served):
    url, tts = served["url"], served["tts"]
    baseline = httpx.post(f"{url}/tts", json=body(media_type="raw"), timeout=120).content
    old = tts.bundle
    started, switched = threading.Event(), threading.Event()
    real = old.s1.generate_iter

    def slow(*a, **k):
        started.set()
        switched.wait(60)
        yield from real(*a, **k)

    old.s1.generate_iter = slow
    out = {}
    try:
        t = threading.Thread(target=lambda: out.setdefault("r", httpx.post(f"{url}/tts", json=body(media_type="raw"),
                                                                            timeout=120)))  # fmt: skip
        t.start()
        assert started.wait(60)
        s1 = served["other"][0].relative_to(served["models"])
        r = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": str(s1)}, timeout=120)
        assert r.status_code == 200, r.text
        switched.set()
        t.join(120)
    finally:
        del old.s1.generate_iter
        switched.set()
    assert out["r"].status_code == 200 and out["r"].content == baseline  # no mixed weights
    health = httpx.get(f"{url}/health").json()["models"]
    assert health["s1"] == "other/s1.safetensors" and "hubert" not in health  # no server paths leak
    after = httpx.post(f"{url}/tts", json=body(media_type="raw"), timeout=120).content
    assert after != baseline
    r = httpx.get(f"{url}/set_sovits_weights", params={"weights_path": "../../etc/passwd"})
    assert r.status_code in (400, 403)
    # back to the voice's own models for the other tests
    pair = {"gpt_weights_path": "base/s1.safetensors", "sovits_weights_path": "base/s2.safetensors"}
    assert httpx.post(f"{url}/set_weights", json=pair, timeout=120).status_code == 200


def test_watermarked_upload_is_refused_and_output_is_marked(served, tmp_path):
    import json

    from gsvkit.safety.watermark import get_watermarker

    url = served["url"]
    r = httpx.post(f"{url}/tts", json=body(), timeout=120)
    out, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert get_watermarker().detect(out, sr).watermarked  # what the server speaks carries the mark
    buf = io.BytesIO()
    sf.write(buf, get_watermarker().apply(speechlike(4.0, seed=5), 16000), 16000, format="WAV")
    files = {"ref_audio": ("made.wav", buf.getvalue(), "audio/wav")}
    form = {"text": "Hi there.", "text_lang": "en", "prompt_text": "x", "prompt_lang": "en", "consent": CONSENT}
    r = httpx.post(f"{url}/tts/upload", data=form, files=files, timeout=120)
    assert r.status_code == 422 and "watermark" in r.json()["detail"]
    lines = [json.loads(x) for x in served["audit"].read_text().splitlines()]
    assert lines[-1]["user"] == "anonymous" and lines[-1]["voice"] == "amy"  # the refused upload wrote nothing


def test_jobs_splitting_the_cores_speak_as_one_alone(tmp_path, tiny_hubert, monkeypatch):
    """`gsv serve --max-jobs auto` on 2 cores: s1's graph gets a 2-thread and a 1-thread session, a lone request runs
    on 2 threads and one started beside another on 1, and every reply is the audio of a direct synthesis."""
    from gsvkit.inference.pipeline import TTS
    from gsvkit.inference.voice import create_voice
    from gsvkit.models.s1 import step_graph

    monkeypatch.setattr(step_graph, "_EXTRA_SESSIONS", ())  # restored after the test
    s1, s2 = build_models(tmp_path / "base")
    ref = tmp_path / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    create_voice(tmp_path / "voices" / "amy", s1=s1, s2=s2, ref_audio=ref, ref_text="This is Amy.", ref_lang="en",
                 consent="synthetic", hubert=tiny_hubert)  # fmt: skip
    torch.set_num_threads(2)  # as `gsv serve` sets the plan's threads before loading (the fixture restores 1)
    step_graph.also_make_sessions_for(2, 1)  # as `gsv serve` does on 2 cores
    tts = TTS(tmp_path / "voices" / "amy", hubert=tiny_hubert)
    graph = tts._bundle.s1.step_graph
    assert graph is not None and sorted(graph._sessions) == [1, 2]
    used: list[int] = []
    session_type = type(graph.session(2))
    run = session_type.run_with_iobinding

    def spy(session, io, *a):
        used.append(session.get_session_options().intra_op_num_threads)
        return run(session, io, *a)

    monkeypatch.setattr(session_type, "run_with_iobinding", spy)
    texts = ["Hello from the server.", "It speaks in chunks."]
    direct = [tts.synthesize(t, "en", seed=3, noise_scale=0.0)[1] for t in texts]
    used.clear()

    class Together:  # the TTS, whose calls wait for each other once `barrier` is set (after taking their share)
        barrier: threading.Barrier | None = None

        def synthesize(self, *a, **kw):
            if self.barrier is not None:
                self.barrier.wait(60)
            return tts.synthesize(*a, **kw)

        def __getattr__(self, name):
            return getattr(tts, name)

    backend = Together()
    settings = ServerSettings(max_jobs=2, max_queue=2, shared_cores=2)
    with Server(create_app(backend, settings)) as url:
        lone = httpx.post(f"{url}/tts", json={**body(), "text": texts[0]}, timeout=120)
        assert set(used) == {2}  # alone: the 2-thread session for every step
        used.clear()
        backend.barrier = threading.Barrier(2)
        replies: dict[int, httpx.Response] = {}

        def ask(i: int) -> None:
            replies[i] = httpx.post(f"{url}/tts", json={**body(), "text": texts[i]}, timeout=120)

        clients = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        clients[0].start()
        deadline = time.time() + 60
        while backend.barrier.n_waiting < 1 and time.time() < deadline:  # the first has taken its share, alone
            time.sleep(0.01)
        clients[1].start()
        for c in clients:
            c.join(120)
    assert set(used) == {1, 2}  # the first started alone (2 threads), the second beside it (1)
    for i, r in [(0, lone), *replies.items()]:
        assert r.status_code == 200, r.text
        wav = sf.read(io.BytesIO(r.content), dtype="float32")[0]
        assert len(wav) == len(direct[i])
        np.testing.assert_allclose(wav, direct[i], atol=2 / 32767)
