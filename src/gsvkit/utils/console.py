"""The command line's consoles, and its one way to print an error or a warning."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape


def make_console(stderr: bool = False) -> Console:
    """A console that wraps only on a terminal.

    Rich falls back to 80 columns when it cannot ask a terminal, which would break the lines a pipe or a log
    file receives; there, every line is written whole.
    """
    stream = sys.stderr if stderr else sys.stdout
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return Console(stderr=stderr, soft_wrap=not tty, width=None if tty else 10_000)


console = make_console()
err_console = make_console(stderr=True)


def warn(message: str) -> None:
    """A warning on the terminal (stderr). The message is plain text: brackets in it print as they are."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an actionable error (plain text, as `warn`) and exit without a traceback."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
