"""`POST /v1/audio/speech`: OpenAI's speech API on `gsv serve`, so clients written for it work unchanged.

Each request becomes a `/tts` request (`TTSRequest`) and goes through the same handler: the same text-length
limit (413), job queue (503), API key (`Authorization: Bearer`, as OpenAI clients send it) and voices by name
from `--voices-dir` only. The handler's 16-bit PCM is then put into the format asked for:

- `wav`, `flac`: at the voice's sample rate (32 kHz for v1/v2); `mp3`: likewise;
- `opus`: Ogg/Opus, at 48 kHz for a 32 kHz voice (Opus has no 32 kHz mode);
- `pcm`: raw 16-bit little-endian mono at 24 kHz, as OpenAI sends it, resampled with soxr.
`aac` is refused (400). `model` and `instructions` are accepted and ignored; `language` (default `auto`) and
`seed` may be added (the OpenAI client's `extra_body`).

Streaming: with `stream_format: "audio"` the reply is sent while s1 is still generating, for pcm, wav (a header
with unknown length, then samples) and opus (one Ogg stream, encoded as the audio comes); flac and mp3 (whose
headers are finished only at the end) come as one file. Without `stream_format` the reply is one whole file.
`sse` is refused (400).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gsvkit.errors import GsvError
from gsvkit.serve.encoding import OPUS_RATES, encode, stream_start
from gsvkit.serve.schemas import TTSRequest

PCM_RATE = 24000  # OpenAI's pcm format
OPUS_RATE = 48000
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
STREAMABLE = ("pcm", "wav", "opus")


class VoiceRef(BaseModel):
    id: str = Field(min_length=1)


class SpeechRequest(BaseModel):
    """OpenAI's `audio.speech.create` body, plus gsvkit's `language` and `seed`."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="accepted for compatibility; the voice decides the models")
    input: str = Field(min_length=1, description="text to speak")
    voice: str | VoiceRef = Field(description="a voice name from the server's voices folder")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=4096, description="accepted and ignored")
    stream_format: Literal["audio", "sse"] | None = Field(None, description="audio: stream while generating")
    language: str = Field("auto", min_length=1, description="language of `input` (gsvkit extension)")
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1 draws a random seed (gsvkit extension)")

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id


Handler = Callable[..., Awaitable[Any]]  # (TTSRequest, Principal) -> reply


def _int16(body: bytes) -> np.ndarray:
    return np.frombuffer(body, dtype="<i2")


def _transcode(wav_bytes: bytes, fmt: str) -> bytes:
    """A whole wav reply of the /tts handler in OpenAI format `fmt`."""
    import soundfile as sf

    if fmt == "wav":
        return wav_bytes
    audio, sr = sf.read(io.BytesIO(wav_bytes), dtype="int16")
    wav = audio.astype(np.float32) / 32767.0  # the handler's own scale, so 16-bit samples come back exactly
    if fmt == "pcm":
        import soxr

        return encode(soxr.resample(wav, sr, PCM_RATE), PCM_RATE, "raw")
    return encode(wav, sr, fmt)


class _Sink(io.RawIOBase):
    """A file libsndfile writes into; `take()` hands over the bytes written since the last call.

    Ogg/Opus only ever appends (checked by `rewrites` in the tests), so the bytes taken form one continuous stream.
    """

    def __init__(self) -> None:
        super().__init__()
        self.buf, self.pos, self.sent, self.rewrites = bytearray(), 0, 0, 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        self.rewrites += self.pos < self.sent
        self.buf[self.pos : self.pos + len(data)] = data
        self.pos += len(data)
        return len(data)

    def readinto(self, out: Any) -> int:
        data = self.buf[self.pos : self.pos + len(out)]
        out[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.buf)}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        out = bytes(self.buf[self.sent :])
        self.sent = len(self.buf)
        return out


class _ChunkEncoder:
    """Streamed int16 chunks at `rate` → bytes of `fmt` (pcm, wav or opus).

    Resampling runs as one soxr stream and Opus as one encoder over the whole reply, so chunk boundaries leave no
    seams and the bytes sent are one valid file.
    """

    def __init__(self, fmt: str, rate: int) -> None:
        import soxr

        self.fmt, self.rate = fmt, rate
        self.out_rate = PCM_RATE if fmt == "pcm" else OPUS_RATE if fmt == "opus" and rate not in OPUS_RATES else rate
        self.resampler = soxr.ResampleStream(rate, self.out_rate, 1, dtype="float32") if self.out_rate != rate else None
        self.sink: _Sink | None = None
        if fmt == "opus":
            import soundfile as sf

            self.sink = _Sink()
            self.file = sf.SoundFile(self.sink, mode="w", samplerate=self.out_rate, channels=1, format="OGG",
                                     subtype="OPUS")  # fmt: skip

    def start(self) -> bytes:
        return stream_start(self.rate, "wav") if self.fmt == "wav" else b""

    def chunk(self, pcm: np.ndarray, last: bool = False) -> bytes:
        wav = pcm.astype(np.float32) / 32767.0
        if self.resampler is not None:
            wav = self.resampler.resample_chunk(wav, last=last)
        if self.sink is None:
            return encode(wav, self.out_rate, "raw")
        if len(wav):
            self.file.write(wav)
        if last:
            self.file.close()
        return self.sink.take()

    def close(self) -> None:
        if self.sink is not None and not self.file.closed:
            self.file.close()


def add_speech_route(
    app: FastAPI, handle: Handler, caller: Callable[..., Any], responses: dict[int | str, Any]
) -> None:
    """Register `POST /v1/audio/speech` on `app`, served by the app's /tts `handle`."""

    @app.post("/v1/audio/speech", responses=responses, response_class=Response, tags=["OpenAI-compatible"])
    async def speech(req: SpeechRequest, who: Any = Depends(caller)) -> Any:  # noqa: B008
        """OpenAI-compatible speech: `model`, `input`, `voice`, `response_format`, `speed`, `stream_format`."""
        from gsvkit.serve.errors import HttpError

        fmt = req.response_format
        if fmt == "aac":
            raise HttpError(400, "response_format aac is not supported; use mp3, opus, flac, wav or pcm")
        if req.stream_format == "sse":
            raise HttpError(400, "stream_format sse is not supported; use audio (or leave it out for one file)")
        stream = req.stream_format == "audio" and fmt in STREAMABLE
        treq = TTSRequest(
            text=req.input, text_lang=req.language, voice=req.voice_name, speed_factor=req.speed, seed=req.seed,
            media_type="raw" if stream else "wav", streaming_mode=1 if stream else 0,
        )  # fmt: skip
        try:
            reply = await handle(treq, who)
        except GsvError as err:  # OpenAI clients show only `message`: put the reason there
            raise HttpError(400, str(err)) from None
        except HttpError as err:
            if err.detail is None:
                raise
            raise HttpError(err.status, f"{err.message}: {err.detail}", err.detail, err.headers) from None
        media = CONTENT_TYPES[fmt]
        if not stream:
            body = await run_in_threadpool(_transcode, reply.body, fmt)
            return Response(body, media_type=media)

        rate = int(reply.headers["X-Sample-Rate"])
        enc = _ChunkEncoder(fmt, rate)
        inner = reply.body_iterator

        async def body() -> AsyncIterator[bytes]:
            try:
                if head := enc.start():
                    yield head
                async for part in inner:
                    if out := await run_in_threadpool(enc.chunk, _int16(part)):
                        yield out
                if tail := enc.chunk(np.zeros(0, dtype=np.int16), last=True):
                    yield tail
            finally:
                enc.close()
                await inner.aclose()

        return StreamingResponse(body(), media_type=media, headers={"X-Sample-Rate": str(enc.out_rate)})
