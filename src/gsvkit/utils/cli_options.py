"""Command-line plumbing shared by every `gsv` command: the error decorator and the common options.

`cli_errors` turns any `GsvError` a command raises into one line and exit status 2 (no traceback). The options
here are defined once and validated as they are parsed, so a bad value fails before any model loads, with
click's one-line "Invalid value for '--x'" message (exit 2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from gsvkit.errors import GsvError, UsageError
from gsvkit.utils.console import fail

F = TypeVar("F", bound=Callable[..., Any])

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def cli_errors(fn: F) -> F:
    """Decorator for a command: a `GsvError` (config, data, checkpoint, disk full, ...) → one line, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GsvError as err:
            fail(str(err))

    return wrapper  # type: ignore[return-value]


def resolve_device(device: str | None, option: str = "--device") -> str:
    """'auto'/None → 'cuda' when CUDA is usable, else 'cpu'; 'cuda[:N]' must exist; anything else is refused."""
    value = (device or "auto").strip().lower()
    if value == "cpu":
        return "cpu"
    import torch

    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cuda" or value.startswith("cuda:"):
        index = value.partition(":")[2]
        if index and not index.isdigit():
            raise UsageError(f"{option} {device}: expected cuda or cuda:N with N a GPU number")
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {device}: no CUDA device is available here; use {option} cpu (or auto)")
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(
                f"{option} {device}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0 … "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
        return value
    raise UsageError(f"{option} {device}: unknown device; choose {DEVICE_HELP}")


def device_callback(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return resolve_device(value)
    except UsageError as err:
        raise typer.BadParameter(str(err).split(": ", 1)[1]) from None


def accelerator_callback(value: str) -> str:
    """`gsv train --device auto|cpu|cuda` (`gpu` too) -> Lightning's accelerator name: auto, cpu or gpu."""
    if value not in ("auto", "cpu", "gpu", "cuda"):
        raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda")
    if value in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter(f"{value}: no CUDA device is available here; use cpu (or auto)")
        return "gpu"
    return value


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value} must be greater than 0")
    return value


def _one_of(choices: tuple[str, ...], value: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
    return value


def _precision(value: str) -> str:
    from gsvkit.models.s1.gpt import PRECISIONS

    return _one_of(PRECISIONS, value)


def _s2_precision(value: str) -> str:
    from gsvkit.models.s2.sovits import S2_PRECISIONS

    return _one_of(S2_PRECISIONS, value)


# Model-loading options of the commands that speak (synth, serve, webui), defined once.
HubertDir = Annotated[Path | None, typer.Option("--hubert", help="HuBERT model directory")]
BertDir = Annotated[Path | None, typer.Option("--bert", help="Chinese BERT model directory")]
SvModel = Annotated[Path | None, typer.Option("--sv-model", help="v2Pro/v2ProPlus speaker-verification model file")]
Precision = Annotated[
    str,
    typer.Option("--precision", callback=_precision, help="s1 weights: auto (int8 on a CPU, fp32 on a GPU), fp32, "
                 "bf16, int8 or int4 (int8 and int4: faster on a CPU, approximate)"),
]  # fmt: skip
S2Precision = Annotated[
    str,
    typer.Option("--s2-precision", callback=_s2_precision, help="s2 decoder: auto (bf16 where the CPU computes it "
                 "natively, else fp32), fp32 or bf16 (faster, approximate)"),
]  # fmt: skip
Vocoder = Annotated[Path | None, typer.Option("--vocoder", help="v3/v4 vocoder file (default: the models folder's)")]
OnnxDir = Annotated[Path | None, typer.Option("--onnx", help="folder written by `gsv export onnx`")]

# The options, defined once. `Device` resolves to "cpu" / "cuda" / "cuda:N" while parsing.
Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP, callback=device_callback)]
OptionalDevice = Annotated[str | None, typer.Option("--device", help=DEVICE_HELP, callback=device_callback)]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads (default: torch's choice)")]
Port = Annotated[int, typer.Option("--port", min=1, max=65535, help="port")]


def positive(help: str, name: str) -> Any:
    """A float option that must be > 0 (sizes, durations)."""
    return typer.Option(name, help=help, callback=_positive)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
