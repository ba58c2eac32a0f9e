"""The `gsv` command line: a thin layer over the package's typed functions.

Each command parses its arguments, calls one plain function and prints the result; errors a user can act on
(`GsvError` and friends) are printed as one clear line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="gsv",
    help="gsvkit: few-shot voice cloning in the GPT-SoVITS family (prepare, train, export, synthesize, serve).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print an actionable error and exit without a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def _main() -> None:
    """gsvkit command line."""


@app.command()
def version() -> None:
    """Print the gsvkit version."""
    from gsvkit import __version__

    console.print(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
