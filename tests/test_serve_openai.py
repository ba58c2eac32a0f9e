"""`POST /v1/audio/speech` driven by the official `openai` client against a real uvicorn on loopback."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

from gsvkit.serve.http import ServerSettings, create_app
from serving import Server
from tiny import build_models, speechlike

openai = pytest.importorskip("openai")

TEXT = "Hello from the server. It speaks in chunks."
KEY = "sk-local-test"
EXTRA = {"seed": 3, "language": "en"}


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

    root = tmp_path_factory.mktemp("openai")
    s1, s2 = build_models(root / "models")
    hubert = tiny_hubert
    ref = root / "ref.wav"
    sf.write(ref, speechlike(4.0), 16000)
    voices = root / "voices"
    create_voice(voices / "amy", s1=s1, s2=s2, ref_audio=ref, ref_text="This is Amy.", ref_lang="en",
                 consent="synthetic", hubert=hubert)  # fmt: skip
    tts = TTS(voices / "amy", hubert=hubert)
    settings = ServerSettings(voices_dir=voices, api_key=KEY, max_text_chars=300)
    with Server(create_app(tts, settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        yield {"url": url, "client": client, "tts": tts}


def speak(client, fmt, **kw):
    return client.audio.speech.create(model="tts-1", voice="amy", input=TEXT, response_format=fmt,
                                      extra_body=EXTRA, **kw).content  # fmt: skip


def test_formats_match_tts(served):
    client, url = served["client"], served["url"]
    wav_bytes = speak(client, "wav")
    wav, sr = sf.read(io.BytesIO(wav_bytes), dtype="int16")
    # the same request through /tts: OpenAI's endpoint is a view of it, sample for sample
    ref = httpx.post(f"{url}/tts", json={"text": TEXT, "text_lang": "en", "seed": 3, "voice": "amy",
                                         "media_type": "raw"}, headers={"X-API-Key": KEY}, timeout=120)  # fmt: skip
    assert ref.status_code == 200, ref.text
    np.testing.assert_array_equal(wav, np.frombuffer(ref.content, dtype="<i2"))
    assert sr == 16000 and len(wav) > sr  # the test voice's rate

    flac, fsr = sf.read(io.BytesIO(speak(client, "flac")), dtype="int16")
    assert fsr == sr and np.array_equal(flac, wav)  # lossless

    pcm = np.frombuffer(speak(client, "pcm"), dtype="<i2")
    assert abs(len(pcm) - len(wav) * 24000 / sr) <= 2  # raw 16-bit at OpenAI's 24 kHz

    for fmt, rate in (("opus", 16000), ("mp3", 16000)):  # 16 kHz is an Opus rate; 32 kHz would become 48 kHz
        audio, got_sr = sf.read(io.BytesIO(speak(client, fmt)), dtype="float32")
        assert got_sr == rate, fmt
        assert abs(len(audio) / got_sr - len(wav) / sr) < 0.15, fmt  # same duration, give or take codec padding
        assert np.abs(audio).max() > 0.01, fmt


def test_default_format_is_mp3_as_openai(served):
    r = served["client"].audio.speech.with_raw_response.create(model="tts-1", voice="amy", input="Hi there.",
                                                                extra_body=EXTRA)  # fmt: skip
    assert r.headers["content-type"] == "audio/mpeg"
    audio, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert sr == 16000 and len(audio) > 0


def test_opus_resamples_rates_it_lacks():
    from gsvkit.serve.encoding import encode

    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(32000) / 32000).astype(np.float32)  # 1 s at a v2 voice's rate
    audio, sr = sf.read(io.BytesIO(encode(tone, 32000, "opus")), dtype="float32")
    assert sr == 48000 and abs(len(audio) - 48000) < 2000


def test_speed_changes_the_audio(served):
    client = served["client"]
    normal = np.frombuffer(speak(client, "pcm"), dtype="<i2")
    fast = np.frombuffer(speak(client, "pcm", speed=2.0), dtype="<i2")
    assert len(fast) < 0.75 * len(normal)


def test_streaming_when_asked(served):
    client = served["client"]
    whole = np.frombuffer(speak(client, "pcm"), dtype="<i2")
    arrivals, data = [], b""
    t0 = time.perf_counter()
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="amy", input=TEXT, response_format="pcm", stream_format="audio", extra_body=EXTRA
    ) as r:
        assert r.headers["x-sample-rate"] == "24000"
        for part in r.iter_bytes():
            arrivals.append(time.perf_counter() - t0)
            data += part
    assert len(arrivals) > 3  # sent in pieces while s1 generates
    streamed = np.frombuffer(data, dtype="<i2")
    assert abs(len(streamed) - len(whole)) <= 2
    # windowed decoding differs slightly from one-shot decoding (as on /tts); the level must agree
    assert abs(np.abs(streamed).mean() - np.abs(whole).mean()) < 0.1 * np.abs(whole).mean() + 1

    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="amy", input=TEXT, response_format="wav", stream_format="audio", extra_body=EXTRA
    ) as r:
        body = r.read()
    assert body[:4] == b"RIFF" and abs((len(body) - 44) // 2 - len(whole) * 16000 / 24000) <= 2

    parts = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="amy", input=TEXT, response_format="opus", stream_format="audio", extra_body=EXTRA
    ) as r:
        parts = list(r.iter_bytes())
    audio, sr = sf.read(io.BytesIO(b"".join(parts)), dtype="float32")  # one Ogg/Opus stream, readable to its end
    assert len(parts) > 1 and abs(len(audio) / sr - len(whole) / 24000) < 0.1


def test_streamed_opus_is_one_continuous_file():
    from gsvkit.serve.openai_speech import _ChunkEncoder

    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * 32000) / 32000) * 32767).astype(np.int16)
    enc = _ChunkEncoder("opus", 32000)
    pieces = [enc.chunk(c) for c in np.array_split(tone, 6)] + [enc.chunk(np.zeros(0, np.int16), last=True)]
    assert enc.sink.rewrites == 0 and sum(map(len, pieces[:-1])) > 0  # bytes leave before the end, never revised
    audio, sr = sf.read(io.BytesIO(b"".join(pieces)), dtype="float32")
    assert sr == 48000 and abs(len(audio) - 3 * 48000) < 1000


def test_same_limits_key_and_voices(served):
    client, url = served["client"], served["url"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).audio.speech.create(
            model="tts-1", voice="amy", input="Hi there.")
    with pytest.raises(openai.BadRequestError, match="no voice named 'alloy'"):
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi there.")
    with pytest.raises(openai.BadRequestError):  # a path is not a voice name
        client.audio.speech.create(model="tts-1", voice="../voices/amy", input="Hi there.")
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.speech.create(model="tts-1", voice="amy", input="x" * 301)
    assert err.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="aac is not supported"):
        client.audio.speech.create(model="tts-1", voice="amy", input="Hi there.", response_format="aac")
    with pytest.raises(openai.BadRequestError, match="sse is not supported"):
        client.audio.speech.create(model="tts-1", voice="amy", input="Hi there.", stream_format="sse")
    with pytest.raises(openai.BadRequestError, match="speed"):
        client.audio.speech.create(model="tts-1", voice="amy", input="Hi there.", speed=9.0)
    # a voice object ({"id": ...}), as newer clients may send it, works like the name
    audio = client.audio.speech.create(model="tts-1", voice={"id": "amy"}, input="Hi there.", response_format="wav",
                                       extra_body=EXTRA).content  # fmt: skip
    assert audio[:4] == b"RIFF"
