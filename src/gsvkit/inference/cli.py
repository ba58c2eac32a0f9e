"""`gsv synth` and `gsv voice create|list`: thin commands over `TTS` and `gsvkit.inference.voice`.

Nothing heavy is imported until a command runs (torch and the models load inside the command).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from gsvkit.inference.cli_params import with_options
from gsvkit.inference.params import SynthesisParams
from gsvkit.utils.cli_options import (
    BertDir,
    Device,
    HubertDir,
    OnnxDir,
    Precision,
    S2Precision,
    SvModel,
    Threads,
    Vocoder,
    set_threads,
)
from gsvkit.utils.console import console, fail, warn

voice_app = typer.Typer(help="Create and list voices (weights + reference clip + provenance).", no_args_is_help=True)
export_app = typer.Typer(help="Export models for other runtimes.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


def _read_text(text: str | None, text_file: Path | None) -> str:
    if text is not None and text_file is not None:
        _fail("give the text either as an argument or with --text-file, not both")
    if text_file is not None:
        if str(text_file) == "-":
            return sys.stdin.read()
        if not text_file.is_file():
            _fail(f"{text_file}: text file not found")
        try:
            return text_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            _fail(f"{text_file}: not UTF-8 text ({err.reason} at byte {err.start}); save the file as UTF-8")
    if text is None or text == "-":
        if sys.stdin.isatty():
            _fail('no text: give it as an argument ("Hello."), with --text-file FILE, or on stdin')
        return sys.stdin.read()
    return text


def model_dirs(voice: Path | None, hubert: Path | None, bert: Path | None) -> tuple[Path | None, Path | None]:
    """HuBERT and BERT directories: the options, else the voice's own (if still there), else the models folder's."""
    from gsvkit.inference.voice import load_voice
    from gsvkit.models.official import resolve

    recorded = load_voice(voice) if voice is not None else None
    return (resolve(hubert, "hubert", recorded=recorded.hubert_path if recorded is not None else None),
            resolve(bert, "bert", recorded=recorded.bert_path if recorded is not None else None))  # fmt: skip


@with_options(SynthesisParams)
def synth(
    text: Annotated[str | None, typer.Argument(help="text to speak; '-' or nothing reads stdin")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="output audio: .wav, .flac or .ogg")] = Path("out.wav"),
    voice: Annotated[Path | None, typer.Option("--voice", help="voice directory (gsv voice create)")] = None,
    lang: Annotated[str, typer.Option("--lang", "-l", help="language of the text (auto, en, zh, ja, ko, yue, ...)")] = (
        "auto"
    ),
    text_file: Annotated[Path | None, typer.Option("--text-file", "-f", help="read the text from a file")] = None,
    s1: Annotated[Path | None, typer.Option("--s1", help="GPT weights (overrides the voice's)")] = None,
    s2: Annotated[Path | None, typer.Option("--s2", help="SoVITS weights (overrides the voice's)")] = None,
    hubert: HubertDir = None,
    bert: BertDir = None,
    sv_model: SvModel = None,
    ref: Annotated[Path | None, typer.Option("--ref", help="reference clip, 3-10 s (default: the voice's)")] = None,
    ref_text: Annotated[str | None, typer.Option("--ref-text", help="transcript of the reference clip")] = None,
    ref_lang: Annotated[str | None, typer.Option("--ref-lang", help="language of the reference transcript")] = None,
    aux_ref: Annotated[list[Path] | None, typer.Option("--aux-ref", help="extra timbre clip (repeatable)")] = None,
    vocoder: Vocoder = None,
    precision: Precision = "auto",
    s2_precision: S2Precision = "auto",
    device: Device = "auto",
    backend: Annotated[str, typer.Option(help="torch, or onnx (needs --onnx DIR from `gsv export onnx`)")] = "torch",
    onnx: OnnxDir = None,
    threads: Threads = None,
    consent: Annotated[
        str | None, typer.Option("--consent", help="required with --ref/--aux-ref: how the speaker agreed to this")
    ] = None,
    allow_synthetic_reference: Annotated[
        bool, typer.Option("--allow-synthetic-reference", help="accept a watermarked (generated) reference clip")
    ] = False,
    no_watermark: Annotated[
        bool, typer.Option("--no-watermark", help="leave the output unmarked (recorded as 'off' in the audit log)")
    ] = False,
    audit_log: Annotated[
        Path | None, typer.Option("--audit-log", help="audit file (default $GSVKIT_AUDIT_LOG or ~/.local/state)")
    ] = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Speak text in a cloned voice and write it to an audio file (watermarked, with an audit line)."""
    from gsvkit.errors import GsvError
    from gsvkit.inference.params import SynthesisParams, make_params

    set_threads(threads)
    body = _read_text(text, text_file)
    if output.suffix.lower() not in (".wav", ".flac", ".ogg"):
        _fail(f"{output}: choose a .wav, .flac or .ogg output file")
    params = params or {}
    try:
        make_params(SynthesisParams, params)  # bad values fail here, before any model loads
        from gsvkit.audio.io import save_audio
        from gsvkit.inference.pipeline import TTS

        if voice is None and (s1 is None or s2 is None) and backend == "torch":
            _fail("give a voice (--voice DIR) or both --s1 and --s2")
        hubert, bert = model_dirs(voice, hubert, bert)
        t0 = time.perf_counter()
        tts = TTS(voice, s1=s1, s2=s2, hubert=hubert, bert=bert, sv_model=sv_model, vocoder=vocoder,
                  device=device, precision=precision, s2_precision=s2_precision,
                  backend=backend, onnx_dir=onnx, watermark=not no_watermark,
                  allow_synthetic_reference=allow_synthetic_reference, audit_log=audit_log)  # fmt: skip
        t_load = time.perf_counter() - t0
        res = tts.synthesize_result(
            body,
            lang,
            ref_audio=ref,
            ref_text=ref_text,
            ref_lang=ref_lang,
            aux_refs=tuple(aux_ref or ()),
            **params,
            consent=consent,
        )
        save_audio(output, res.audio, res.sample_rate)
    except GsvError as err:
        _fail(str(err))
    seconds = len(res.audio) / res.sample_rate
    work = sum(res.timings.values())
    console.print(
        f"wrote [bold]{output}[/]: {seconds:.2f} s at {res.sample_rate} Hz, {len(res.fragments)} fragment(s), "
        f"{sum(res.tokens_per_fragment)} tokens, seed {res.seed}; load {t_load:.1f} s, synthesis {work:.1f} s "
        f"(RTF {work / max(seconds, 1e-9):.2f}); watermark {res.watermark}",
        highlight=False,
    )


@voice_app.command("create")
def voice_create(
    out: Annotated[Path, typer.Argument(help="voice directory to create")],
    ref: Annotated[Path, typer.Option("--ref", help="default reference clip, 3-10 s")],
    ref_text: Annotated[str, typer.Option("--ref-text", help="transcript of the reference clip")],
    ref_lang: Annotated[str, typer.Option("--ref-lang", help="language of the transcript")],
    consent: Annotated[
        str, typer.Option("--consent", help="how the speaker agreed to be cloned (who, when, how it is recorded)")
    ],
    run: Annotated[Path | None, typer.Option("--from", help="exported training run holding s1 and s2")] = None,
    s1: Annotated[Path | None, typer.Option("--s1", help="GPT weights (gsvkit or official)")] = None,
    s2: Annotated[Path | None, typer.Option("--s2", help="SoVITS weights (gsvkit or official)")] = None,
    name: Annotated[str | None, typer.Option("--name", help="display name (default: directory name)")] = None,
    speaker: Annotated[str | None, typer.Option("--speaker", help="who the voice belongs to")] = None,
    source: Annotated[str | None, typer.Option("--source", help="where the training audio came from")] = None,
    license: Annotated[str | None, typer.Option("--license", help="terms of use")] = None,
    languages: Annotated[list[str] | None, typer.Option("--language", help="allowed language (repeatable)")] = None,
    aux_ref: Annotated[list[Path] | None, typer.Option("--aux-ref", help="extra timbre clip (repeatable)")] = None,
    hubert: Annotated[
        Path | None, typer.Option("--hubert", help="HuBERT directory: stores the prompt tokens, recorded for use")
    ] = None,
    bert: Annotated[Path | None, typer.Option("--bert", help="Chinese BERT directory, recorded for use")] = None,
    sv_model: Annotated[
        Path | None, typer.Option("--sv-model", help="v2Pro: speaker-verification model; stores the embeddings")
    ] = None,
    vocoder: Annotated[
        Path | None, typer.Option("--vocoder", help="v3/v4: vocoder file, recorded in the voice")
    ] = None,
    description: Annotated[str, typer.Option("--description", help="free text")] = "",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace OUT if it exists")] = False,
    consent_date: Annotated[str | None, typer.Option("--consent-date", help="when consent was given (ISO)")] = None,
    consent_scope: Annotated[str | None, typer.Option("--consent-scope", help="what the voice may be used for")] = None,
    consent_by: Annotated[str | None, typer.Option("--consent-by", help="who records it (default: you)")] = None,
    allow_synthetic_reference: Annotated[
        bool, typer.Option("--allow-synthetic-reference", help="accept a watermarked (generated) reference clip")
    ] = False,
) -> None:
    """Bundle trained weights and a reference clip into a voice directory."""
    from gsvkit.errors import GsvError
    from gsvkit.inference.voice import create_voice, find_run_weights, models_needed
    from gsvkit.models.official import resolve
    from gsvkit.safety.consent import Consent

    try:
        hubert = resolve(hubert, "hubert")  # the models folder's HuBERT stores the prompt tokens
        bert = resolve(bert, "bert")
        if run is not None:
            found1, found2 = find_run_weights(run)
            s1, s2 = s1 or found1, s2 or found2
        if s1 is None or s2 is None:
            _fail("give --from RUN_DIR or both --s1 and --s2")
        v = create_voice(
            out,
            s1=s1,
            s2=s2,
            ref_audio=ref,
            ref_text=ref_text,
            ref_lang=ref_lang,
            consent=Consent(
                statement=consent, speaker=speaker, given=consent_date, scope=consent_scope, recorded_by=consent_by
            ),  # fmt: skip
            allow_synthetic_reference=allow_synthetic_reference,
            name=name,
            languages=languages,
            aux_refs=tuple(aux_ref or ()),
            speaker=speaker,
            source=source,
            license=license,
            description=description,
            hubert=hubert,
            bert=bert,
            sv=sv_model,
            vocoder=vocoder,
            overwrite=overwrite,
        )
    except GsvError as err:
        _fail(str(err))
    stored = " (prompt tokens stored)" if v.prompt_cache.is_file() else ""
    stored += " (speaker embeddings stored)" if v.speaker_cache.is_file() else ""
    console.print(
        f"created voice [bold]{v.name}[/] in {v.root}: {v.version}, languages {', '.join(v.info.languages)}{stored}",
        highlight=False,
    )
    for need in models_needed(v):
        warn(need)


@voice_app.command("list")
def voice_list(
    root: Annotated[Path, typer.Argument(help="folder of voices (or one voice)")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the voices in a folder, with their languages and provenance."""
    import json

    from gsvkit.errors import GsvError
    from gsvkit.inference.voice import scan_voices

    try:
        entries = scan_voices(root)
    except GsvError as err:
        _fail(str(err))
    if as_json:
        typer.echo(
            json.dumps(
                [e.voice.summary() if e.voice else {"path": str(e.path), "error": e.error} for e in entries], indent=2
            )
        )
        return
    if not entries:
        console.print(f"no voices in {root}")
        return
    from rich.table import Table

    table = Table("name", "version", "languages", "reference", "speaker / consent", "path")
    for e in entries:
        if e.voice is None:
            table.add_row(e.path.name, "[red]broken[/]", "", e.error or "", "", str(e.path))
            continue
        s = e.voice.summary()
        table.add_row(
            s["name"],
            s["version"],
            ", ".join(s["languages"]),
            f"{s['reference_text'][:40]} ({s['reference_language']})",
            f"{s['speaker'] or '-'} / {s['consent'][:40]}",
            s["path"],
        )
    console.print(table)


@export_app.command("onnx")
def export_onnx_cmd(
    out: Annotated[Path, typer.Argument(help="folder for the .onnx graphs")],
    voice: Annotated[Path | None, typer.Option("--voice", help="voice whose s1/s2 to export")] = None,
    s1: Annotated[Path | None, typer.Option("--s1", help="GPT weights")] = None,
    s2: Annotated[Path | None, typer.Option("--s2", help="SoVITS weights")] = None,
    hubert: Annotated[Path | None, typer.Option("--hubert", help="HuBERT directory (exported too when given)")] = None,
) -> None:
    """Export HuBERT, s1 (prefill + KV-cache step) and s2 (reference, latent, decode) as ONNX graphs."""
    from gsvkit.errors import GsvError

    try:
        from gsvkit.inference.onnx.export import export_onnx
        from gsvkit.inference.voice import load_voice

        if voice is not None:
            v = load_voice(voice)
            s1, s2 = s1 or v.s1_path, s2 or v.s2_path
            hubert = hubert or v.hubert_path
        if s1 is None or s2 is None:
            _fail("give --voice DIR or both --s1 and --s2")
        manifest = export_onnx(out, s1, s2, hubert)
    except ImportError as err:
        _fail(f"ONNX export needs the 'onnx' extra ({err.name} is missing): pip install 'gsvkit[onnx]'")
    except GsvError as err:
        _fail(str(err))
    console.print(f"wrote ONNX graphs and {manifest.name} to [bold]{out}[/]", highlight=False)
