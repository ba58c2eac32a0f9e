"""`gsv serve` (HTTP API under uvicorn) and `gsv webui` (Gradio page): thin commands over `serve.http`/`webui`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NamedTuple, NoReturn

import typer

from gsvkit.utils.cli_options import (
    DEVICE_HELP,
    BertDir,
    Device,
    HubertDir,
    OnnxDir,
    Port,
    Precision,
    S2Precision,
    SvModel,
    Threads,
    Vocoder,
    device_callback,
    positive,
    set_threads,
)
from gsvkit.utils.console import console, fail


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


MAX_JOBS_HELP = (
    "syntheses running at once: a number, or auto (on a CPU one per core, the running ones splitting the cores, so "
    "a lone request gets them all; with --threads N, cores / N jobs of N threads)"
)


class JobPlan(NamedTuple):
    """How `gsv serve` runs syntheses: how many at once, torch's threads at start, and the cores they split."""

    jobs: int
    threads: int | None  # torch threads set at start (None: torch's default)
    shared_cores: int | None  # each job takes shared_cores // running threads when it starts work (None: it keeps
    # the process's threads)

    def apply(self) -> None:
        """Set the process up for this plan, before any model loads: torch's threads, and with shared cores a
        session for a lone job and one for a job's smallest share on every s1 graph (onnxruntime fixes a session's
        threads), whatever the count of the thread that loads it (a model switch or a key's first request loads in
        a worker thread, whose count is its last job's share)."""
        set_threads(self.threads)
        if self.shared_cores:
            from gsvkit.models.s1.step_graph import also_make_sessions_for

            also_make_sessions_for(self.shared_cores, 1)


def max_jobs_option(value: str) -> str:
    if value != "auto" and not (value.isdigit() and int(value) >= 1):
        raise typer.BadParameter(f"{value!r}: give auto or a whole number >= 1")
    return value


def serve_jobs(max_jobs: str, threads: int | None, device: str, backend: str = "torch") -> JobPlan:
    """`--max-jobs`/`--threads` -> a `JobPlan`. "auto" on a CPU: one job per usable core, and the running jobs split
    the cores between them (`utils.cores.share`): a lone request decodes on every core, two on half each, and so
    on, so a second request still uses the second core fully (benchmarks/serve_load.py). With `--threads N`, or with
    the ONNX backend (its sessions fix their threads when made), cores // N jobs of N threads (N = 1 by default).
    On a GPU "auto" is 1 job."""
    if max_jobs != "auto":
        return JobPlan(int(max_jobs), threads, None)
    if device != "cpu":
        return JobPlan(1, threads, None)
    from gsvkit.utils.cores import usable_cores

    cores = usable_cores()
    if threads is None and backend == "torch" and cores > 1:
        return JobPlan(cores, cores, cores)
    per_job = threads or 1
    return JobPlan(max(1, cores // per_job), per_job, None)


def _tts(voice: Path | None, voices_dir: Path | None, s1, s2, hubert, bert, device: str, precision: str,
         backend: str = "torch", onnx: Path | None = None, sv_model: Path | None = None,
         vocoder: Path | None = None, **options):  # fmt: skip
    from gsvkit.inference.pipeline import TTS
    from gsvkit.inference.voice import scan_voices

    if voice is None and s1 is None and s2 is None and voices_dir is not None:
        first = next((e.voice for e in scan_voices(voices_dir) if e.voice is not None), None)
        voice = first.root if first is not None else None
    from gsvkit.inference.cli import model_dirs

    hubert, bert = model_dirs(voice, hubert, bert)
    return TTS(voice, s1=s1, s2=s2, hubert=hubert, bert=bert, sv_model=sv_model, vocoder=vocoder, device=device,
               precision=precision, backend=backend, onnx_dir=onnx, **options)  # fmt: skip


NO_WATERMARK_HELP = "leave outputs unmarked (recorded as 'off' in every audit line)"
SYNTHETIC_REF_HELP = "accept reference clips that carry the synthesis watermark"
AUDIT_LOG_HELP = "append-only audit file (default $GSVKIT_AUDIT_LOG or ~/.local/state/gsvkit/audit.jsonl)"


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Port = 9880,
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="/set_*_weights may only load files inside this folder")
    ] = None,
    voices_dir: Annotated[
        Path | None, typer.Option("--voices-dir", help="voices offered by /voices (default: --models-dir)")
    ] = None,
    voice: Annotated[Path | None, typer.Option("--voice", help="voice loaded at start")] = None,
    s1: Annotated[Path | None, typer.Option("--s1", help="GPT weights loaded at start")] = None,
    s2: Annotated[Path | None, typer.Option("--s2", help="SoVITS weights loaded at start")] = None,
    hubert: HubertDir = None,
    bert: BertDir = None,
    sv_model: SvModel = None,
    vocoder: Vocoder = None,
    ref_dir: Annotated[
        list[Path] | None, typer.Option("--ref-dir", help="folder ref_audio_path may point into (repeatable)")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="require this key (X-API-Key header); or set GSVKIT_API_KEY")
    ] = None,
    keys: Annotated[
        Path | None, typer.Option("--keys", help="keys.yaml: per-key voices_dir/models_dir (see README)")
    ] = None,
    no_watermark: Annotated[bool, typer.Option("--no-watermark", help=NO_WATERMARK_HELP)] = False,
    allow_synthetic_reference: Annotated[
        bool, typer.Option("--allow-synthetic-reference", help=SYNTHETIC_REF_HELP)
    ] = False,
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help=AUDIT_LOG_HELP)] = None,
    max_text_chars: Annotated[int, typer.Option(min=1, help="longest text accepted")] = 2000,
    max_upload_mb: Annotated[float, positive("largest upload accepted, MB", "--max-upload-mb")] = 10.0,
    max_jobs: Annotated[str, typer.Option(callback=max_jobs_option, help=MAX_JOBS_HELP)] = "auto",
    max_queue: Annotated[int, typer.Option(min=0, help="syntheses waiting; more get 503")] = 4,
    precision: Precision = "auto",
    s2_precision: S2Precision = "auto",
    device: Annotated[str, typer.Option(envvar="GSVKIT_DEVICE", help=DEVICE_HELP, callback=device_callback)] = "auto",
    backend: Annotated[str, typer.Option(help="torch, or onnx (needs --onnx DIR)")] = "torch",
    onnx: OnnxDir = None,
    threads: Threads = None,
) -> None:
    """Serve synthesis over HTTP (upstream api_v2 parameters; docs at /docs)."""
    from gsvkit.errors import GsvError

    plan = serve_jobs(max_jobs, threads, device, backend)
    plan.apply()

    try:
        import uvicorn

        from gsvkit.serve.http import ServerSettings, create_app
    except ImportError as err:
        _fail(f"the server needs the 'serve' extra ({err.name} is missing): pip install 'gsvkit[serve]'")
    from gsvkit.serve.auth import check_key_value, env_api_key, load_keys

    voices_dir = voices_dir or models_dir
    options = {"watermark": not no_watermark, "allow_synthetic_reference": allow_synthetic_reference,
               "audit_log": audit_log, "s2_precision": s2_precision}  # fmt: skip
    try:
        # Typer reads an empty environment variable as unset; here empty means a mistake, not "no authentication".
        api_key = check_key_value(api_key, "--api-key") if api_key is not None else env_api_key()
        key_file = load_keys(keys) if keys is not None else None
        if key_file is not None and api_key is not None:
            _fail("give either --api-key (GSVKIT_API_KEY) or --keys, not both")
        if key_file is not None:
            tts = _tts(None, None, None, None, hubert, bert, device, precision, backend, onnx, sv_model, vocoder,
                       **options)  # fmt: skip
        else:
            tts = _tts(voice, voices_dir, s1, s2, hubert, bert, device, precision, backend, onnx, sv_model, vocoder,
                       **options)  # fmt: skip

        def per_key(entry):  # each key loads its own models: a switch by one never changes another's
            return _tts(None, entry.voices_dir, None, None, hubert, bert, device, precision, backend, onnx, sv_model,
                        vocoder, **options)  # fmt: skip

        settings = ServerSettings(
            models_dir=models_dir,
            voices_dir=voices_dir,
            ref_dirs=list(ref_dir or []),
            api_key=api_key,
            keys=key_file,
            max_text_chars=max_text_chars,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_jobs=plan.jobs,
            shared_cores=plan.shared_cores,
            max_queue=max_queue,
        )
    except GsvError as err:
        _fail(str(err))
    app = create_app(tts, settings, per_key if key_file is not None else None)
    console.print(f"gsvkit server on http://{host}:{port} (docs at /docs)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="info")


def webui(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Port = 9872,
    voices_dir: Annotated[Path | None, typer.Option("--voices-dir", help="voices offered in the page")] = None,
    voice: Annotated[Path | None, typer.Option("--voice", help="voice selected at start")] = None,
    s1: Annotated[Path | None, typer.Option("--s1", help="GPT weights")] = None,
    s2: Annotated[Path | None, typer.Option("--s2", help="SoVITS weights")] = None,
    hubert: HubertDir = None,
    bert: BertDir = None,
    sv_model: SvModel = None,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="where the training tab keeps datasets and runs")] = Path(
        "webui-work"
    ),
    precision: Precision = "auto",
    s2_precision: S2Precision = "auto",
    device: Device = "auto",
    no_watermark: Annotated[bool, typer.Option("--no-watermark", help=NO_WATERMARK_HELP)] = False,
    allow_synthetic_reference: Annotated[
        bool, typer.Option("--allow-synthetic-reference", help=SYNTHETIC_REF_HELP)
    ] = False,
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help=AUDIT_LOG_HELP)] = None,
) -> None:
    """Open the web page: synthesis tab and training tab."""
    from gsvkit.errors import GsvError

    try:
        from gsvkit.serve.webui import build_ui
    except ImportError as err:
        _fail(f"the web UI needs the 'webui' extra ({err.name} is missing): pip install 'gsvkit[webui]'")
    try:
        tts = _tts(voice, voices_dir, s1, s2, hubert, bert, device, precision, sv_model=sv_model,
                   watermark=not no_watermark, allow_synthetic_reference=allow_synthetic_reference,
                   audit_log=audit_log, s2_precision=s2_precision)  # fmt: skip
        ui = build_ui(tts, voices_dir=voices_dir, work_dir=work_dir)
    except GsvError as err:
        _fail(str(err))
    console.print(f"gsvkit web UI on http://{host}:{port}", highlight=False)
    ui.queue(default_concurrency_limit=1).launch(server_name=host, server_port=port)
