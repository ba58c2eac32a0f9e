"""The HTTP server: `create_app(backend, settings)` builds a FastAPI app; `gsv serve` runs it under uvicorn.

Endpoints (upstream `api_v2.py` names where upstream has them):
- `GET/POST /tts`: synthesize; `media_type` wav/raw/ogg; `streaming_mode` streams chunks while s1 generates.
- `POST /tts/upload`: the same with the reference clip uploaded as multipart form data.
- `GET /set_gpt_weights`, `GET /set_sovits_weights`, `POST /set_weights`: switch models, only to files inside
  the models directory (anything else, `..` tricks and symlinks out included, is refused with 403).
- `POST /v1/audio/speech`: OpenAI's speech API (see `serve/openai_speech.py`).
- `GET /voices`, `GET /health`; OpenAPI docs at `/docs` and `/openapi.json`.

Limits: text length (413), upload size (413), concurrent jobs — `max_jobs` run, `max_queue` wait, and anything
beyond gets 503 at once (with Retry-After). Optional API key (`X-API-Key` or `Authorization: Bearer`), or a keys
file giving each key its own voices, models and loaded weights (`serve.auth`); `/health` and the docs stay open.
Bad input answers 400 with a JSON `message` (upstream's shape), never a traceback; a zero-shot request without a
consent declaration answers 403, a reference clip that carries the synthesis watermark 422.

A model switch never disturbs a synthesis already running: the backend hands each job one immutable pair of
models, and a switch swaps in a new pair only once it has fully loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from gsvkit import __version__, limits
from gsvkit.errors import GsvError
from gsvkit.serve.auth import Gatekeeper, KeyEntry, KeysFile, Principal, check_key_value
from gsvkit.serve.encoding import encode, encode_chunk, stream_start
from gsvkit.serve.errors import HttpError, refusal
from gsvkit.serve.limits import BodyLimit, JobGate, run_switch
from gsvkit.serve.paths import AUDIO_UPLOAD_SUFFIXES, WEIGHT_SUFFIXES, confine, confine_any, store_upload
from gsvkit.serve.schemas import (
    MEDIA_TYPES,
    HealthResponse,
    Message,
    TTSForm,
    TTSRequest,
    VoicesResponse,
    VoiceSummary,
    WeightsPair,
)
from gsvkit.utils.cores import share, use_threads

log = logging.getLogger("gsvkit.serve")


# ------------------------------------------------------------------------------------------------ settings
class ServerSettings(BaseModel):
    """Everything `create_app` needs besides the backend. `gsv serve` fills it from its options."""

    model_config = ConfigDict(extra="forbid")

    models_dir: Path | None = Field(None, description="model switching is confined to this folder (None: off)")
    voices_dir: Path | None = Field(None, description="voices listed by /voices and usable by name")
    ref_dirs: list[Path] = Field(default_factory=list, description="extra folders ref_audio_path may point into")
    api_key: str | None = Field(None, description="required in X-API-Key / Authorization: Bearer when set")
    keys: KeysFile | None = Field(None, description="per-key voices and models (serve.auth); replaces api_key")
    max_text_chars: int = Field(2000, ge=1)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_jobs: int = Field(1, ge=1, description="syntheses running at once")
    shared_cores: int | None = Field(
        None, ge=1, description="cores the running jobs split: each takes cores // running torch threads when it "
        "starts work (a synthesis, a stream's opening and each of its chunks); None: jobs keep the process's threads"
    )  # fmt: skip
    max_queue: int = Field(4, ge=0, description="syntheses waiting; more get 503")
    upload_cache_files: int = Field(64, ge=1, description="uploaded clips kept for the reference cache")

    @field_validator("api_key")
    @classmethod
    def _no_empty_key(cls, v: str | None) -> str | None:
        return v if v is None else check_key_value(v)


# ------------------------------------------------------------------------------------------------ backend
class AudioStreamLike(Protocol):
    sample_rate: int

    def __iter__(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


class SpeechBackend(Protocol):
    """What the server needs from `gsvkit.inference.TTS` (tests plug in a fake)."""

    def synthesize(self, text: str, lang: str, **kwargs: Any) -> tuple[int, np.ndarray]: ...

    def stream(self, text: str, lang: str, **kwargs: Any) -> AudioStreamLike: ...

    def load_models(self, s1: str | os.PathLike | None = None, s2: str | os.PathLike | None = None) -> None: ...

    def status(self) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------------------------ helpers
def caller(request: Request) -> Principal:
    """Dependency: the `Principal` behind the request's key (401 when it is missing or wrong)."""
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    who = request.app.state.gatekeeper.identify(given)
    if who is None:
        raise HttpError(401, "missing or wrong API key (send it in X-API-Key)", headers={"WWW-Authenticate": "Bearer"})
    return who


Caller = Annotated[Principal, Depends(caller)]


# ------------------------------------------------------------------------------------------------ app
def create_app(
    backend: SpeechBackend,
    settings: ServerSettings | None = None,
    backend_factory: Callable[[KeyEntry], SpeechBackend] | None = None,
) -> Any:
    """Build the FastAPI app around `backend`. No module-level state: two apps never share anything.

    With `settings.keys`, `backend_factory` gives each key its own backend (its own loaded models)."""
    settings = settings or ServerSettings()
    if settings.keys is not None and backend_factory is None:
        raise GsvError("a keys file needs a backend per key (backend_factory), so keys never share loaded models")
    gate = JobGate(settings.max_jobs, settings.max_queue)

    def take_share() -> None:
        """Set this worker thread's torch threads to its job's share of `shared_cores` (torch's count is per thread)."""
        if settings.shared_cores:
            use_threads(share(settings.shared_cores, gate.counts()["running"]))

    upload_dir = Path(tempfile.mkdtemp(prefix="gsvkit-uploads-"))
    default = Principal(
        "api-key" if settings.api_key else "anonymous", settings.voices_dir, settings.models_dir, backend
    )
    gatekeeper = Gatekeeper(default, settings.keys, settings.api_key, backend_factory)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            shutil.rmtree(upload_dir, ignore_errors=True)

    app = FastAPI(
        title="gsvkit",
        version=__version__,
        description="Speak in a cloned voice (GPT-SoVITS family). Parameter names follow upstream api_v2.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.gate = gate
    app.state.backend = backend
    app.state.gatekeeper = gatekeeper
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 64 * 1024)

    # -------------------------------------------------------------------------------------- errors
    @app.exception_handler(HttpError)
    async def _http_error(_req: Request, err: HttpError) -> JSONResponse:
        return JSONResponse(
            status_code=err.status, content={"message": err.message, "detail": err.detail}, headers=err.headers
        )

    @app.exception_handler(GsvError)
    async def _user_error(_req: Request, err: GsvError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"message": "bad request", "detail": str(err)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, err: RequestValidationError) -> JSONResponse:
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "form"))
            problems.append(f"{loc}: {e.get('msg')}")
        return JSONResponse(
            status_code=400, content={"message": "invalid parameters: " + "; ".join(problems), "detail": problems}
        )

    # -------------------------------------------------------------------------------------- synthesis
    def resolve_voice(name: str | None, who: Principal) -> Any:
        if not name:
            return None
        if who.voices_dir is None:
            raise HttpError(403 if settings.keys else 400, f"voice {name!r}: no voices folder for {who.name}")
        from gsvkit.inference.voice import find_voice

        try:
            return find_voice(who.voices_dir, name)
        except GsvError:
            if settings.keys is None:
                raise
            # Another key's voice and no voice at all answer alike: a key learns nothing about others' voices.
            raise HttpError(403, f"voice {name!r} is not available to {who.name}") from None

    def ref_roots(who: Principal) -> list[Path]:
        roots = list(settings.ref_dirs)
        roots += [r for r in (who.voices_dir, who.models_dir) if r is not None]
        return roots

    def prepare(req: TTSRequest, who: Principal, uploaded: Path | None = None) -> dict[str, Any]:
        if len(req.text) > settings.max_text_chars:
            raise HttpError(
                413, f"text is {len(req.text)} characters; this server accepts at most {settings.max_text_chars}"
            )
        kwargs = req.synthesis_kwargs()
        if uploaded is not None:
            kwargs["ref_audio"] = uploaded
        elif kwargs["ref_audio"]:
            kwargs["ref_audio"] = confine_any(
                ref_roots(who), kwargs["ref_audio"], "ref_audio_path", AUDIO_UPLOAD_SUFFIXES
            )
        kwargs["aux_refs"] = tuple(
            confine_any(ref_roots(who), a, "aux_ref_audio_paths", AUDIO_UPLOAD_SUFFIXES) for a in kwargs["aux_refs"]
        )
        kwargs["voice"] = resolve_voice(kwargs["voice"], who)
        kwargs["user"] = who.name  # for the audit line
        return kwargs

    def busy() -> HttpError:
        c = gate.counts()
        return HttpError(
            503,
            f"server busy: {c['running']} running and {c['waiting']} waiting (limit {c['capacity']}); retry later",
            headers={"Retry-After": "2"},
        )

    async def handle(req: TTSRequest, who: Principal, uploaded: Path | None = None) -> Any:
        kwargs = prepare(req, who, uploaded)
        backend = who.backend
        if not gate.try_enter():
            raise busy()
        media = MEDIA_TYPES[req.media_type]
        if not req.streaming:
            started = False

            def job() -> tuple[int, np.ndarray]:
                nonlocal started
                gate.start()
                started = True
                take_share()
                return backend.synthesize(**kwargs)

            try:
                sr, audio = await run_in_threadpool(job)
            except GsvError as err:
                raise refusal(err) from None
            finally:
                gate.finish(started)
            body = await run_in_threadpool(encode, audio, sr, req.media_type)
            return Response(body, media_type=media)

        started = False

        def open_stream() -> AudioStreamLike:
            nonlocal started
            gate.start()
            started = True
            take_share()
            return backend.stream(**kwargs, stream=req.stream_kwargs())

        try:
            stream = await run_in_threadpool(open_stream)
        except GsvError as err:
            gate.finish(started)
            raise refusal(err) from None
        except BaseException:
            gate.finish(started)
            raise
        chunks = iter(stream)

        def next_chunk() -> np.ndarray | None:
            take_share()  # each chunk may run in another worker thread, and other jobs may have come or gone
            return next(chunks, None)

        async def body() -> AsyncIterator[bytes]:
            try:
                yield stream_start(stream.sample_rate, req.media_type)
                while True:
                    try:
                        chunk = await run_in_threadpool(next_chunk)
                    except GsvError as err:  # the status line is gone: end the stream, log why
                        log.warning("stream ended early: %s", err)
                        return
                    if chunk is None:
                        return
                    if len(chunk):
                        yield encode_chunk(chunk, stream.sample_rate, req.media_type)
            finally:
                with contextlib.suppress(Exception):
                    stream.close()
                gate.finish(True)

        # Step into `body` now: a started generator runs its `finally` when closed or collected, so the job slot
        # comes back even if the client disconnects before the first byte is sent.
        parts = body()
        head = await parts.__anext__()

        async def relay() -> AsyncIterator[bytes]:
            try:
                if head:
                    yield head
                async for part in parts:
                    yield part
            finally:
                await parts.aclose()

        return StreamingResponse(relay(), media_type=media, headers={"X-Sample-Rate": str(stream.sample_rate)})

    ok_audio = {200: {"content": {m: {} for m in MEDIA_TYPES.values()}, "description": "audio"}}
    errors = {400: {"model": Message}, 413: {"model": Message}, 503: {"model": Message}}

    @app.get("/tts", responses={**ok_audio, **errors}, response_class=Response)
    async def tts_get(req: Annotated[TTSRequest, Query()], who: Caller) -> Any:
        """Synthesize from query parameters (upstream api_v2 names)."""
        return await handle(req, who)

    @app.post("/tts", responses={**ok_audio, **errors}, response_class=Response)
    async def tts_post(req: TTSRequest, who: Caller) -> Any:
        """Synthesize from a JSON body (upstream api_v2 names)."""
        return await handle(req, who)

    @app.post("/tts/upload", responses={**ok_audio, **errors}, response_class=Response)
    async def tts_upload(
        who: Caller,
        params: Annotated[TTSForm, Form()],
        ref_audio: Annotated[UploadFile, File(description="reference clip, 3-10 s")],
    ) -> Any:
        """Synthesize with an uploaded reference clip (multipart form: the /tts fields plus `ref_audio`)."""
        data = await ref_audio.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HttpError(413, f"ref_audio is over the {settings.max_upload_bytes}-byte upload limit")
        if not data:
            raise HttpError(400, "ref_audio is empty")
        suffix = Path(ref_audio.filename or "").suffix.lower()
        suffix = suffix if suffix in AUDIO_UPLOAD_SUFFIXES else ".wav"
        path = upload_dir / (hashlib.sha256(data).hexdigest()[:32] + suffix)
        if not path.exists():
            await run_in_threadpool(store_upload, upload_dir, path, data, settings.upload_cache_files)
        return await handle(params, who, uploaded=path)

    # OpenAI's speech API over the same handler (limits, key, voices); its own file, serve/openai_speech.py
    from gsvkit.serve.openai_speech import add_speech_route

    add_speech_route(app, handle, caller, {**ok_audio, **errors})

    # -------------------------------------------------------------------------------------- models
    def switch(who: Principal, s1: str | None, s2: str | None) -> JSONResponse:
        p1 = confine(who.models_dir, s1, "weights_path", WEIGHT_SUFFIXES) if s1 is not None else None
        p2 = confine(who.models_dir, s2, "weights_path", WEIGHT_SUFFIXES) if s2 is not None else None
        for p in (p1, p2):
            size = p.stat().st_size if p is not None else 0
            if size > limits.MAX_SWITCH_FILE_BYTES:
                err = limits.over("MAX_SWITCH_FILE_BYTES", f"{p.name}: file size", size, limits.MAX_SWITCH_FILE_BYTES)
                raise HttpError(413, "model switch refused", str(err))
        if not who.switch_lock.acquire(blocking=False):
            raise HttpError(503, "another model switch is in progress; retry later", headers={"Retry-After": "5"})
        outcome = run_switch(who.switch_lock, lambda: who.backend.load_models(s1=p1, s2=p2), limits.MAX_SWITCH_SECONDS)
        if outcome is None:
            raise HttpError(
                504, "model switch still loading",
                f"the load took over MAX_SWITCH_SECONDS={limits.MAX_SWITCH_SECONDS:g}; it continues in the background "
                "and the switch slot is free again once it ends (raise gsvkit.limits.MAX_SWITCH_SECONDS for slow "
                "disks)",
                headers={"Retry-After": "30"},
            )  # fmt: skip
        if isinstance(outcome, GsvError):
            raise HttpError(400, "model switch failed", str(outcome))
        if isinstance(outcome, BaseException):
            raise HttpError(500, "model switch failed", f"{type(outcome).__name__}: {str(outcome)[:200]}")
        return JSONResponse({"message": "success"})

    @app.get("/set_gpt_weights", responses=errors)
    async def set_gpt_weights(who: Caller, weights_path: str = "") -> Any:
        """Switch s1 (GPT) weights to a file inside the models folder; running jobs finish on the old ones."""
        return await run_in_threadpool(switch, who, weights_path, None)

    @app.get("/set_sovits_weights", responses=errors)
    async def set_sovits_weights(who: Caller, weights_path: str = "") -> Any:
        """Switch s2 (SoVITS) weights to a file inside the models folder."""
        return await run_in_threadpool(switch, who, None, weights_path)

    @app.post("/set_weights", responses=errors)
    async def set_weights(body: WeightsPair, who: Caller) -> Any:
        """Switch both models at once (needed when moving between v1 and v2 models)."""
        return await run_in_threadpool(switch, who, body.gpt_weights_path, body.sovits_weights_path)

    # -------------------------------------------------------------------------------------- info
    @app.get("/voices", response_model=VoicesResponse)
    async def voices(who: Caller) -> VoicesResponse:
        """Voices in the caller's voices folder."""
        if who.voices_dir is None:
            return VoicesResponse(voices=[])
        from gsvkit.inference.voice import scan_voices

        entries = await run_in_threadpool(scan_voices, who.voices_dir)
        return VoicesResponse(
            voices=[
                VoiceSummary(**{k: v for k, v in e.voice.summary().items() if k != "path"}) for e in entries if e.voice
            ],
            errors={e.path.name: e.error for e in entries if e.error},
        )

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Liveness and load: models in use and job counts (no API key needed)."""
        models = _public_status(backend.status(), settings.models_dir)
        state = "ok" if models.get("loaded") else "no_models"
        return HealthResponse(status=state, version=__version__, models=models, jobs=gate.counts())

    return app


_PUBLIC_KEYS = (
    "loaded",
    "version",
    "sample_rate",
    "voice",
    "backend",
    "precision",
    "s1_weights",
    "s2_precision",
    "s2_decoder",
    "cached_references",
)


def _public_status(status: dict[str, Any], models_dir: Path | None) -> dict[str, Any]:
    """What /health may tell anyone: no server paths, only model files relative to the models folder."""
    out = {k: status[k] for k in _PUBLIC_KEYS if k in status}
    for key in ("s1", "s2"):
        if status.get(key):
            p = Path(status[key])
            try:
                out[key] = str(p.relative_to(models_dir.resolve())) if models_dir else p.name
            except ValueError:
                out[key] = p.name
    return out
