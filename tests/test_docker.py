"""The Dockerfile installs gsvkit as the README and Makefile do and starts a `gsv serve` that accepts its options."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gsvkit.cli import app
from gsvkit.models.official import MODELS_ENV

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _runs() -> list[str]:
    return [line[4:].strip() for line in DOCKERFILE.splitlines() if line.startswith("RUN ")]


def _extras(command: str) -> set[str]:
    m = re.search(r'\.\[([\w,]+)\]', command)
    assert m, command
    return set(m.group(1).split(","))


def test_install_commands_match_readme_and_makefile():
    pins = re.findall(r"torch==([\d.]+)", (ROOT / "Makefile").read_text())
    readme = (ROOT / "README.md").read_text()
    assert pins and set(pins) == set(re.findall(r"pip install torch==([\d.]+)", readme))
    pip = [r for r in _runs() if r.startswith("pip install")]
    # torch first, with the same pin; then gsvkit with the README's extras
    assert re.match(rf"pip install torch=={re.escape(pins[0])}\b", pip[0]), pip
    readme_install = next(line for line in readme.splitlines() if line.startswith('pip install -e ".['))
    assert _extras(pip[1]) == _extras(readme_install) == {"all"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    all_extras = set(re.search(r'^all = \["gsvkit\[([\w,]+)\]"\]', pyproject, re.M).group(1).split(","))
    assert {"serve", "fetch"} <= all_extras  # the image can serve and fetch the official weights


def test_image_serves_with_options_gsv_accepts():
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", DOCKERFILE, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.+)$", DOCKERFILE, re.M).group(1))
    assert entry == ["gsv"] and cmd[0] == "serve"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # reachable from outside the container
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    for opt in (a for a in cmd if a.startswith("--")):
        assert opt in help_text, opt
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(l for l in DOCKERFILE.splitlines() if l.startswith(("ENV", " ")))))
    assert env[MODELS_ENV] == "/models" and env["GSVKIT_DEVICE"] == "${DEVICE}"
    # the device comes from the environment, so the CUDA build (DEVICE=cuda) serves on the GPU
    assert "GSVKIT_DEVICE" in help_text


def test_cuda_variant_is_documented():
    readme = (ROOT / "README.md").read_text()
    build = next(line for line in DOCKERFILE.splitlines() if "gsvkit:cuda" in line)
    args = shlex.split(build.split("CUDA:")[1])
    assert "TORCH_INDEX=https://pypi.org/simple" in args and "DEVICE=cuda" in args
    assert "--gpus all" in readme and "--build-arg DEVICE=cuda" in readme


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.container
@pytest.mark.skipif(not _docker_daemon(), reason="no Docker daemon on this machine")
def test_cpu_image_builds_and_runs(tmp_path):
    subprocess.run(["docker", "build", "-t", "gsvkit-test", str(ROOT)], check=True, timeout=3600)
    out = subprocess.run(["docker", "run", "--rm", "gsvkit-test", "version"], capture_output=True, text=True,
                         check=True, timeout=300)  # fmt: skip
    assert out.stdout.strip()
