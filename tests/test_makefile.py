"""The Makefile's promises: `make demo` can run twice, `make clean` keeps the virtual environment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(target: str) -> list[str]:
    """The commands `make TARGET` would run, for a venv that already exists (nothing is executed)."""
    out = subprocess.run(["make", "-n", "-C", str(ROOT), target, "VENV=.venv", "-o", ".venv/.installed"],
                         capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("make")]


def test_clean_keeps_the_venv_and_distclean_removes_it():
    clean = dry_run("clean")
    assert clean == ["rm -rf runs .pytest_cache"]
    assert dry_run("distclean") == [*clean, "rm -rf .venv"]


def test_demo_replaces_its_own_previous_run():
    assert dry_run("demo")[-1] == ".venv/bin/gsv demo --out runs/demo --overwrite"


def test_quick_loop_leaves_out_slow_tests_and_lint_type_checks():
    assert dry_run("test-quick")[-1] == '.venv/bin/python -m pytest -q -m "not slow"'
    assert ".venv/bin/mypy" in dry_run("lint")
    assert not any("not slow" in line for line in dry_run("test"))  # `make test` still runs everything
