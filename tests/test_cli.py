"""The `gsv` entry point: help works, lists the commands, and importing the package does no work."""

import subprocess
import sys

from typer.testing import CliRunner

from gsvkit.cli import app


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and "version" in result.output


def test_gsv_executable_runs():
    out = subprocess.run([sys.executable, "-m", "gsvkit.cli", "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("0.")


def test_import_is_cheap():
    # Importing the package must not pull torch or any model code (nothing happens at import time).
    code = "import sys, gsvkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
