"""The `gsv` command line: a thin layer over the package's typed functions.

Each command parses its arguments, calls one plain function and prints the result; errors a user can act on
(`GsvError` and friends) are printed as one clear line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from gsvkit.utils.cli_options import OptionalDevice, cli_errors
from gsvkit.utils.console import console, fail, warn


class _Group(TyperGroup):
    """The root command group; it shows boolean flags as flags in every command's --help.

    Typer's help lists a type for every option, so `--quiet <bool>` reads as if it took a value; an empty
    metavar leaves the type column blank for flags (including --help), as click's own help does.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _flags_as_flags(self)


def _flags_as_flags(command: TyperGroup | TyperCommand) -> None:
    for param in [*command.params, command.get_help_option(typer.Context(command))]:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _flags_as_flags(sub)


app = typer.Typer(
    cls=_Group,
    name="gsv",
    help="gsvkit: few-shot voice cloning in the GPT-SoVITS family (prepare, train, export, synthesize, serve).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
__all__ = ["app", "fail"]


@app.callback()
def _main() -> None:
    """gsvkit command line."""


@app.command()
def version() -> None:
    """Print the gsvkit version."""
    from gsvkit import __version__

    console.print(__version__)


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="official GPT-SoVITS .pth/.ckpt (or a gsvkit .safetensors) file")],
    out: Annotated[Path, typer.Argument(help="output gsvkit .safetensors file")],
    fp16: Annotated[
        bool | None,
        typer.Option("--fp16/--fp32", help="store floating tensors in half / full precision (default: as stored)"),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace OUT if it exists")] = False,
    base: Annotated[
        Path | None, typer.Option(help="v3/v4 LoRA files: the full base model they were trained on (merged)")
    ] = None,
) -> None:
    """Convert a weight file to gsvkit's safe, self-describing .safetensors format."""
    from gsvkit.checkpoint import convert_checkpoint, read_header
    from gsvkit.errors import GsvError

    dtype = None
    if fp16 is not None:
        import torch

        dtype = torch.float16 if fp16 else torch.float32
    try:
        if src.suffix == ".ckpt" and _is_training_checkpoint(src):
            # Our own training checkpoint: exported with the config it was trained with.
            from gsvkit.training.export import export_checkpoint

            header = read_header(export_checkpoint(src, out, dtype=dtype, overwrite=overwrite))
        else:
            header = convert_checkpoint(src, out, dtype=dtype, overwrite=overwrite, base=base)
    except GsvError as err:
        fail(str(err))
    console.print(
        f"wrote [bold]{header.path}[/]: {header.kind} {header.version}, {header.num_params:,} parameters "
        f"({', '.join(header.dtypes)}), from {header.info.get('source_format', '?')}",
        highlight=False,
    )


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="gsvkit .safetensors or official GPT-SoVITS .pth/.ckpt file")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="also read every tensor and check the checksum")] = False,
) -> None:
    """Show what a weight file holds: kind, version, source format, parameter count, config, training info."""
    from gsvkit.checkpoint import load_checkpoint, read_header
    from gsvkit.errors import GsvError

    if file.suffix == ".ckpt" and _is_training_checkpoint(file):
        _training_checkpoint_info(file, as_json, verify)
        return
    try:
        header = read_header(file)
        if verify:
            load_checkpoint(file, verify=True)
    except GsvError as err:
        fail(str(err))
    summary = header.to_dict()
    if verify:
        summary["verified"] = True
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("file", str(header.path)),
        ("kind", header.kind),
        ("version", header.version),
        ("source format", header.source_format),
        ("parameters", f"{header.num_params:,} in {len(header.tensors)} tensors"),
        ("dtypes", ", ".join(f"{k} ×{v}" for k, v in header.dtypes.items())),
    ]
    if verify:
        rows.append(("integrity", "ok (all tensors read, checksums match)"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    training = {k: v for k, v in header.info.items() if k != "upstream_config"}
    console.print("[bold]training info[/]")
    console.print_json(json.dumps(training))
    console.print("[bold]config[/]")
    console.print_json(json.dumps(summary["config"]))


def _is_training_checkpoint(path: Path) -> bool:
    from gsvkit.training.export import is_training_checkpoint

    return is_training_checkpoint(path)


def _training_checkpoint_info(file: Path, as_json: bool, verify: bool) -> None:
    """`gsv info` of a checkpoint written by `gsv train` (every tensor is read and its checksum checked)."""
    from gsvkit.errors import GsvError
    from gsvkit.training.export import training_checkpoint_info

    try:
        summary = training_checkpoint_info(file)
    except GsvError as err:
        fail(str(err))
    if verify:
        summary["verified"] = True
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key in ("file", "kind", "version", "epoch", "step", "interrupted", "parameters", "checksum", "dataset_hash"):
        console.print(f"[bold]{key:<14}[/]{summary[key]}", highlight=False)
    console.print("[bold]validation[/]")
    console.print_json(json.dumps(summary["val_metrics"]))
    console.print("[bold]config[/]")
    console.print_json(json.dumps(summary["config"]))


@app.command()
def prepare(
    inputs: Annotated[
        list[Path], typer.Argument(help="audio files, folders of audio, transcript files, or an upstream exp folder")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="dataset directory to create or update")],
    lang: Annotated[
        str | None, typer.Option("--lang", help="language of transcripts naming none (default: en)")
    ] = None,
    speaker: Annotated[str | None, typer.Option(help="speaker of utterances naming none (default: speaker)")] = None,
    transcripts: Annotated[
        list[Path] | None, typer.Option("--transcripts", help="transcript file: .list, .csv, .tsv, .jsonl (repeat)")
    ] = None,
    hubert: Annotated[Path | None, typer.Option(help="local chinese-hubert-base directory")] = None,
    s2: Annotated[Path | None, typer.Option(help="s2 weights whose quantizer gives the semantic tokens")] = None,
    bert: Annotated[Path | None, typer.Option(help="local chinese-roberta-wwm-ext-large directory (zh)")] = None,
    asr_model: Annotated[
        Path | None, typer.Option("--asr-model", help="faster-whisper model directory for untranscribed clips")
    ] = None,
    sv_model: Annotated[
        Path | None, typer.Option("--sv-model", help="v2Pro/v2ProPlus: speaker-verification model (embeddings)")
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option("--val-fraction", help="share of each speaker held out for validation (default: 0.1)"),
    ] = None,
    val: Annotated[list[str] | None, typer.Option("--val", help="validation utterance id (repeat)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the train/validation split (default: 0)")] = None,
    workers: Annotated[int | None, typer.Option(help="processes for decoding and slicing (default: 1)")] = None,
    device: OptionalDevice = None,
    sample_rate: Annotated[
        int | None, typer.Option("--sample-rate", help="clip rate (default: the s2 model's, else 32000)")
    ] = None,
    denoise: Annotated[bool | None, typer.Option("--denoise", help="denoise clips with noisereduce")] = None,
    loudness: Annotated[
        str | None, typer.Option(help="level normalisation: peak (upstream's) or lufs (default: peak)")
    ] = None,
    target_lufs: Annotated[
        float | None, typer.Option("--target-lufs", help="target for --loudness lufs (default: -23)")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="slicer: silence below this dB (default: -34)")] = None,
    min_length: Annotated[
        int | None, typer.Option("--min-length", help="slicer: minimum clip ms (default: 4000)")
    ] = None,
    min_interval: Annotated[
        int | None, typer.Option("--min-interval", help="slicer: shortest cut silence ms (default: 300)")
    ] = None,
    hop_size: Annotated[int | None, typer.Option("--hop-size", help="slicer: loudness hop ms (default: 10)")] = None,
    max_sil_kept: Annotated[
        int | None, typer.Option("--max-sil-kept", help="slicer: silence kept at cuts ms (default: 500)")
    ] = None,
    max_length: Annotated[
        float | None, typer.Option("--max-length", help="cut clips longer than this again, seconds (default: 20)")
    ] = None,
    min_duration: Annotated[
        float | None, typer.Option("--min-duration", help="drop clips shorter than this, seconds (default: 0.6)")
    ] = None,
    max_duration: Annotated[
        float | None, typer.Option("--max-duration", help="drop transcribed files longer than this, s (default: 54)")
    ] = None,
    upstream_layout: Annotated[
        bool | None, typer.Option("--upstream-layout", help="also write upstream's 2-name2text/4-cnhubert/... files")
    ] = None,
    strict: Annotated[
        bool | None, typer.Option("--strict", help="fail on the first bad item instead of dropping it")
    ] = None,
    allow_synthetic: Annotated[
        bool | None, typer.Option("--allow-synthetic", help="accept recordings carrying the synthesis watermark")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="prepare.yaml with any of these options")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Turn recordings (+ transcripts) into a training dataset: clips, phones, features, split and a report."""
    from gsvkit.data.prepare import prepare as run_prepare
    from gsvkit.data.prepare_config import load_prepare_config, prepare_config_from_dict
    from gsvkit.errors import GsvError

    given = {
        "inputs": [str(p) for p in inputs], "out": str(out), "language": lang, "speaker": speaker,
        "transcripts": [str(p) for p in transcripts] if transcripts else None,
        "hubert": hubert and str(hubert), "s2": s2 and str(s2), "bert": bert and str(bert),
        "asr_model": asr_model and str(asr_model), "sv": sv_model and str(sv_model),
        "val_fraction": val_fraction, "val": val or None, "seed": seed,
        "workers": workers, "device": device, "sample_rate": sample_rate, "denoise": denoise, "loudness": loudness,
        "target_lufs": target_lufs, "min_duration": min_duration, "max_duration": max_duration,
        "upstream_layout": upstream_layout, "strict": strict, "allow_synthetic": allow_synthetic,
    }  # fmt: skip
    slicer = {"threshold": threshold, "min_length": min_length, "min_interval": min_interval,
              "hop_size": hop_size, "max_sil_kept": max_sil_kept, "max_length": max_length}  # fmt: skip
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if any(v is not None for v in slicer.values()):
        overrides["slicer"] = {k: v for k, v in slicer.items() if v is not None}
    try:
        cfg = load_prepare_config(config, overrides) if config else prepare_config_from_dict(overrides, "options")
        cfg = _prepare_model_defaults(cfg)
        result = run_prepare(cfg, progress=not quiet)
    except GsvError as err:
        fail(str(err))
    summary = result.report.summary(result.items)
    for message in result.report.warnings:
        warn(message)
    if not result.items:
        reasons = "; ".join(f"{d.where} ({d.stage}): {d.reason}" for d in result.report.dropped[:5])
        more = len(result.report.dropped) - 5
        fail(f"{result.out}: no usable clip ({reasons or 'no input found'}{f'; {more} more' if more > 0 else ''}); "
             f"see {result.out / 'report.md'}", code=1)
    console.print(
        f"{result.out}: {summary['utterances']} utterances ({summary['seconds'] / 60:.1f} min), "
        f"{summary['train']} train / {summary['val']} validation, {summary['dropped']} dropped; "
        f"see {result.out / 'report.md'}",
        highlight=False, markup=False,
    )


def _prepare_model_defaults(cfg):
    """Models not named by option or config file come from the models folder, where `gsv models fetch` puts them."""
    from gsvkit.models.official import default_path

    found = {key: str(p) for key, role in (("hubert", "hubert"), ("s2", "s2G"), ("bert", "bert"))
             if getattr(cfg, key) is None and (p := default_path(role, cfg.text_version)) is not None}  # fmt: skip
    return cfg.model_copy(update=found) if found else cfg


def _register_eval() -> None:
    # The sub-app module only defines commands; its scorers and models load when a command runs.
    from gsvkit.eval.cli import eval_app

    app.add_typer(eval_app, name="eval")


_register_eval()


def _register_inference() -> None:
    # synth, voice, serve and webui live beside their code; torch, models and servers load when a command runs.
    from gsvkit.inference.cli import export_app, synth, voice_app
    from gsvkit.serve.cli import serve, webui

    app.command("synth")(synth)
    app.add_typer(voice_app, name="voice")
    app.add_typer(export_app, name="export")
    app.command("serve")(serve)
    app.command("webui")(webui)


_register_inference()


def _register_models() -> None:
    # `gsv models fetch|list`: huggingface_hub loads only when `fetch` runs.
    from gsvkit.models.cli import models_app

    app.add_typer(models_app, name="models")


_register_models()


def _register_training() -> None:
    # `gsv train s2|s1|all`, `gsv runs show`, `gsv demo`; Lightning and torch load when a command runs.
    from gsvkit.inference.cli import export_app
    from gsvkit.training.cli import demo_cmd, export_checkpoint_cmd, runs_app, train_app

    export_app.command("checkpoint")(export_checkpoint_cmd)
    app.add_typer(train_app, name="train")
    app.add_typer(runs_app, name="runs")
    app.command("demo")(demo_cmd)


_register_training()


def _register_safety() -> None:
    # `gsv detect` and `gsv audit`; the watermark network loads when a command runs.
    from gsvkit.safety.cli import audit, detect

    app.command("detect")(detect)
    app.command("audit")(audit)


_register_safety()


@app.command()
def text(
    content: Annotated[str, typer.Argument(help="Text to turn into phones.")],
    lang: Annotated[str, typer.Option("--lang", help="auto, auto_yue, zh, ja, ko, yue, en, all_zh, ...")] = "auto",
    version: Annotated[str, typer.Option(help="Symbol table: v1 or v2.")] = "v2",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the normalised text, phones and phone ids the frontend makes of TEXT (per language segment)."""
    from gsvkit.text import TextFrontend

    parts = TextFrontend(version=version).process_segments(content, lang)
    rows = [{"language": p.language, "norm_text": p.norm_text, "phones": p.phones, "phone_ids": p.phone_ids,
             "word2ph": p.word2ph} for p in parts]
    if as_json:
        console.print_json(json.dumps(rows, ensure_ascii=False))
        return
    for p in parts:
        console.print(f"[bold]{p.language}[/] {p.norm_text}", highlight=False)
        console.print("  phones: " + " ".join(p.phones), highlight=False)
        console.print("  ids:    " + " ".join(map(str, p.phone_ids)), highlight=False)


def _with_error_lines(group: typer.Typer) -> None:
    """Every command of `group` (and its sub-groups) turns a `GsvError` into one line and exit 2: one place."""
    for command in group.registered_commands:
        if command.callback is not None:
            command.callback = cli_errors(command.callback)
    for sub_group in group.registered_groups:
        if sub_group.typer_instance is not None:
            _with_error_lines(sub_group.typer_instance)


_with_error_lines(app)

if __name__ == "__main__":  # pragma: no cover
    app()
