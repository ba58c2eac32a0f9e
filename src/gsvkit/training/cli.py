"""`gsv train s2|s1|all`, `gsv runs show`, `gsv export checkpoint` and `gsv demo`: thin wrappers over
`gsvkit.training.fit` and friends.

Importing this module imports no torch or Lightning; they load when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.markup import escape

from gsvkit.utils.cli_options import accelerator_callback
from gsvkit.utils.console import console, err_console, fail

if TYPE_CHECKING:
    from gsvkit.models.official import Role

train_app = typer.Typer(help="Fine-tune s2 (SoVITS), s1 (GPT) or both on a prepared dataset.", no_args_is_help=True)
runs_app = typer.Typer(help="Inspect training runs.", no_args_is_help=True)

Dataset = Annotated[Path, typer.Argument(help="Prepared dataset directory (from `gsv prepare`).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Experiment directory, e.g. runs/myvoice.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config of this stage.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the newest readable checkpoint.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config field: train.batch_size=8 (repeatable)."),
]
Devices = Annotated[int, typer.Option("--devices", min=1, help="Processes/GPUs; > 1 trains with DDP.")]
Accel = Annotated[str, typer.Option(
    "--device", "--accelerator", callback=accelerator_callback, help="auto, cpu or cuda (--devices sets how many)."
)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


def _run(fn, *args, **kwargs):
    from gsvkit.errors import GsvError
    from gsvkit.training.fit import TrainingInterrupted

    try:
        return fn(*args, **kwargs)
    except TrainingInterrupted as err:
        err_console.print(f"[yellow]{escape(str(err))}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except GsvError as err:  # configs, data, checkpoints, disk full
        _fail(str(err))


def _default_pretrained(given: Path | None, config: Path | None, role: Role, stage: str, resume: bool) -> Path | None:
    """Without --pretrained and --config: the official v2 pretrained file from the models folder, if it is there."""
    if given is not None or config is not None:
        return given
    from gsvkit.models.official import default_path, fetch_hint

    found = default_path(role, "v2")
    if found is not None:
        console.print(f"{stage}: pretrained {found} (from the models folder)", highlight=False)
    elif not resume:
        err_console.print(f"[yellow]warning:[/] {stage} starts from random weights; {fetch_hint(role)}",
                          highlight=False, soft_wrap=True)  # fmt: skip
    return found


def _print(result) -> None:
    from gsvkit.training.fit import format_summary

    console.print(format_summary(result), highlight=False)


@train_app.command("s2")
def train_s2_cmd(
    dataset: Dataset,
    out: Out,
    pretrained: Annotated[Path | None, typer.Option(help="s2 generator weights (official or gsvkit).")] = None,
    pretrained_d: Annotated[Path | None, typer.Option(help="s2 discriminator weights.")] = None,
    config: ConfigOpt = None,
    resume: Resume = False,
    overrides: Overrides = None,
    devices: Devices = 1,
    accelerator: Accel = "auto",
    quiet: Quiet = False,
    lora_rank: Annotated[int, typer.Option(min=1, max=256, help="v3/v4: LoRA rank (alpha = rank)")] = 32,
) -> None:
    """Train s2 (SoVITS) with validation, early stopping and safe checkpoints; export the best epoch.

    v3/v4 models are fine-tuned with LoRA; the run also writes the adapters in upstream's LoRA file format."""
    from gsvkit.training.fit import train_s2

    pretrained = _default_pretrained(pretrained, config, "s2G", "s2", resume)
    result = _run(train_s2, dataset, out, config, pretrained, pretrained_d, resume, overrides or [], devices,
                  accelerator, not quiet, lora_rank)
    if result is not None:
        _print(result)


@train_app.command("s1")
def train_s1_cmd(
    dataset: Dataset,
    out: Out,
    pretrained: Annotated[Path | None, typer.Option(help="s1 GPT weights (official or gsvkit).")] = None,
    config: ConfigOpt = None,
    resume: Resume = False,
    overrides: Overrides = None,
    devices: Devices = 1,
    accelerator: Accel = "auto",
    quiet: Quiet = False,
) -> None:
    """Train s1 (GPT) with validation, early stopping and safe checkpoints; export the best epoch."""
    from gsvkit.training.fit import train_s1

    pretrained = _default_pretrained(pretrained, config, "s1", "s1", resume)
    result = _run(train_s1, dataset, out, config, pretrained, resume, overrides or [], devices, accelerator,
                  not quiet)
    if result is not None:
        _print(result)


@train_app.command("all")
def train_all_cmd(
    dataset: Dataset,
    out: Out,
    s2_pretrained: Annotated[Path | None, typer.Option(help="s2 generator weights.")] = None,
    s2_pretrained_d: Annotated[Path | None, typer.Option(help="s2 discriminator weights.")] = None,
    s1_pretrained: Annotated[Path | None, typer.Option(help="s1 GPT weights.")] = None,
    s2_config: Annotated[Path | None, typer.Option(help="s2 YAML config.")] = None,
    s1_config: Annotated[Path | None, typer.Option(help="s1 YAML config.")] = None,
    resume: Resume = False,
    s2_set: Annotated[list[str] | None, typer.Option("--s2-set", help="s2 override (repeatable).")] = None,
    s1_set: Annotated[list[str] | None, typer.Option("--s1-set", help="s1 override (repeatable).")] = None,
    devices: Devices = 1,
    accelerator: Accel = "auto",
    quiet: Quiet = False,
) -> None:
    """Train s2, then s1, on the same dataset."""
    from gsvkit.training.fit import train_all

    s2_pretrained = _default_pretrained(s2_pretrained, s2_config, "s2G", "s2", resume)
    s1_pretrained = _default_pretrained(s1_pretrained, s1_config, "s1", "s1", resume)
    results = _run(train_all, dataset, out, s2_config, s1_config, s2_pretrained, s2_pretrained_d, s1_pretrained,
                   resume, s2_set or [], s1_set or [], devices, accelerator, not quiet)
    if results is not None:
        for r in results:
            _print(r)


@runs_app.command("show")
def runs_show_cmd(
    run: Annotated[Path, typer.Argument(help="Experiment directory (runs/EXP) or one stage of it (runs/EXP/s2).")],
    width: Annotated[int, typer.Option(help="Chart width in characters.")] = 60,
) -> None:
    """Print the validation curves, why each stage stopped and the checkpoint chosen."""
    from gsvkit.errors import GsvError
    from gsvkit.training.runs import show_run

    try:
        console.print(show_run(run, width=width), highlight=False, markup=False)
    except GsvError as err:
        _fail(str(err))


def export_checkpoint_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A kept checkpoint: runs/EXP/s2/checkpoints/epoch=0004-….ckpt")],
    out: Annotated[Path, typer.Argument(help="Output inference file (.safetensors).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Export any kept epoch of a training run as an fp16 inference file (as training exports the best one)."""
    from gsvkit.training.export import export_checkpoint

    path = _run(export_checkpoint, checkpoint, out, overwrite=overwrite)
    console.print(f"wrote [bold]{path}[/] from {checkpoint}", highlight=False)


def demo_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes everything.")] = Path("gsv-demo"),
    minutes: Annotated[float, typer.Option(help="Length of the synthetic dataset, in minutes.")] = 1.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT when an earlier gsv demo wrote it.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Run the whole pipeline on a small synthetic voice with tiny models (a few minutes on CPU).

    prepare → train s2 → train s1 (early stopping) → export a voice → synthesize one sentence. The tiny models
    start from random weights, so the result only shows that everything works; quality needs pretrained weights.
    """
    from gsvkit.training.demo import run_demo

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    result = _run(run_demo, out, minutes=minutes, progress=not quiet, say=say, overwrite=overwrite)
    if result is not None:
        console.print(result.describe(), highlight=False, markup=False)
