"""Atomic writes: the final name holds either the old or the new content, never a partial file."""

import os

import pytest

from gsvkit.utils.io import atomic_path, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert os.listdir(p.parent) == ["a.txt"]


def test_failure_keeps_old_content(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_no_overwrite_without_intent(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("keep")
    with pytest.raises(FileExistsError, match="a.txt"):
        atomic_write_text(p, "new", overwrite=False)
    assert p.read_text() == "keep"
