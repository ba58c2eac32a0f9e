"""Suite-wide test policy.

Tests skip (with the reason) when an optional tool is missing on a developer's machine. On CI (`CI` set in the
environment) everything except a GPU is installed by `make test`, so a skip there means a missing install step: it
is turned into a failure instead of hiding it. GPU tests (`@pytest.mark.gpu` or a "CUDA" reason) and container
builds (`@pytest.mark.container`: CI machines run no container engine) may still skip.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped:
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    allowed = item.get_closest_marker("gpu") or item.get_closest_marker("container")
    if allowed or "cuda" in reason.lower() or "gpu" in reason.lower():
        return
    report.outcome = "failed"
    report.longrepr = f"skipped on CI, which installs every dependency: {reason}"


@pytest.fixture(autouse=True)
def _audit_log_in_tmp(tmp_path_factory, monkeypatch):
    """Synthesis appends to an audit log; keep the suite's lines out of the user's home."""
    if "GSVKIT_AUDIT_LOG" not in os.environ:
        monkeypatch.setenv("GSVKIT_AUDIT_LOG", str(tmp_path_factory.mktemp("audit") / "audit.jsonl"))


@pytest.fixture(autouse=True)
def _graph_sessions_restored(monkeypatch):
    """`gsv serve` (run by some tests through its command) adds process-wide s1 graph sessions; undo it per test."""
    from gsvkit.models.s1 import step_graph

    monkeypatch.setattr(step_graph, "_EXTRA_SESSIONS", step_graph._EXTRA_SESSIONS)


# ------------------------------------------------------------------------------ shared tiny models (built once)
@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(s1, s2) paths of a random tiny v2 pair (configs/tiny, seed 0); read-only: copy before changing."""
    from tiny import build_models

    return build_models(tmp_path_factory.mktemp("tiny_pair"))


@pytest.fixture(scope="session")
def tiny_hubert(tmp_path_factory):
    """Folder of a tiny random HuBERT stand-in (transformers format)."""
    from tiny import build_hubert

    return build_hubert(tmp_path_factory.mktemp("tiny_hubert"))
