"""`gsv models fetch/list` against a loopback server speaking the Hub's download protocol (no internet)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest

from gsvkit.errors import GsvError
from gsvkit.models import fetch as fetch_mod
from gsvkit.models import official
from gsvkit.models.fetch import MANIFEST, FetchError, fetch_models, list_models
from gsvkit.models.official import REPO_ID, Component, OfficialFile
from hub_server import HubServer

BIG = bytes(range(256)) * 1200  # 307,200 bytes: an "LFS" file (sha256 etag)
SMALL = b'{"model_type": "hubert"}\n'  # a plain git file (blob-id etag)
KNOWN = b"pretrained weights " * 100  # 1,900 bytes, with a sha256 recorded in the registry
FILES = {"fake/model.bin": BIG, "fake/config.json": SMALL, "fake/s2Gfake.pth": KNOWN}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def registry(monkeypatch):
    """A family `vtest` of three small files instead of the real multi-GB ones."""
    comps = [
        Component("vtest:s2G", "s2G", (OfficialFile("fake/s2Gfake.pth", len(KNOWN), _sha(KNOWN)),), "generator"),
        Component("vtest:dir", "hubert", (OfficialFile("fake/model.bin"), OfficialFile("fake/config.json")), "dir"),
    ]  # fmt: skip
    real = official.components
    monkeypatch.setattr(fetch_mod, "components", lambda t: comps if t == "vtest" else real(t))
    return comps


@pytest.fixture
def hub():
    with HubServer(REPO_ID, FILES) as server:
        yield server


def test_fetch_lays_out_verifies_and_caches(tmp_path, registry, hub):
    root = tmp_path / "models"
    got = fetch_models("vtest", root, endpoint=hub.url)
    assert {s.path: s.verified for s in got} == {
        "fake/s2Gfake.pth": "sha256 (registry)", "fake/model.bin": "sha256 (hub)", "fake/config.json": "git blob (hub)"}
    for name, data in FILES.items():
        assert (root / name).read_bytes() == data  # the repository's layout under the models folder
    record = json.loads((root / MANIFEST).read_text())["files"]
    assert record["fake/model.bin"]["sha256"] == hashlib.sha256(BIG).hexdigest()
    assert record["fake/model.bin"]["commit"] == hub.commit
    assert all(s.downloaded for s in got)

    hub.requests.clear()
    again = fetch_models("vtest", root, endpoint=hub.url)
    assert not any(s.downloaded for s in again)
    assert [r for r in hub.requests if r[0] == "GET"] == []  # cached: nothing downloaded twice
    # the file with a recorded sha256, verified before and untouched since, is not even asked about
    assert not any(p.endswith("s2Gfake.pth") for _m, p, _r in hub.requests)


def test_interrupted_download_resumes_with_range(tmp_path, registry, hub, monkeypatch):
    # huggingface_hub keeps what it received in whole chunks (10 MiB by default) and asks for the rest with a
    # Range request; a smaller chunk lets a 300 kB file show it.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    hub.cut_first_get["fake/model.bin"] = 200_000
    got = fetch_models("vtest", tmp_path / "models", endpoint=hub.url)
    assert (tmp_path / "models" / "fake/model.bin").read_bytes() == BIG
    assert hub.gets("fake/model.bin") == [None, f"bytes={3 * 64 * 1024}-"]  # resumed, not restarted
    assert next(s for s in got if s.path == "fake/model.bin").sha256 == hashlib.sha256(BIG).hexdigest()


def test_corrupted_download_is_detected_and_removed(tmp_path, registry, hub):
    root = tmp_path / "models"
    hub.corrupt.add("fake/model.bin")
    with pytest.raises(FetchError, match=r"fake/model.bin: downloaded content does not match \(sha256 \(hub\)"):
        fetch_models("vtest", root, endpoint=hub.url)
    assert not (root / "fake/model.bin").exists()
    assert "fake/model.bin" not in json.loads((root / MANIFEST).read_text())["files"]
    hub.corrupt.clear()  # the next run downloads it again and succeeds
    fetch_models("vtest", root, endpoint=hub.url)
    assert (root / "fake/model.bin").read_bytes() == BIG


def test_registry_checksum_beats_the_server(tmp_path, hub, monkeypatch):
    """The real registry: a server whose HuBERT files are not the official ones is refused, nothing kept."""
    # same size as the official config.json, other bytes; the weights are another file altogether
    hub.files.update({"chinese-hubert-base/config.json": b"{" + b" " * 1447 + b"}",
                      "chinese-hubert-base/pytorch_model.bin": BIG})
    hub.lfs_min = 10_000  # config.json is a plain git file (blob-id etag), as on the real hub
    root = tmp_path / "models"
    with pytest.raises(FetchError, match="chinese-hubert-base/config.json: downloaded content does not match"):
        fetch_models("hubert", root, endpoint=hub.url)
    assert not (root / "chinese-hubert-base/config.json").exists()
    # A large file whose hub sha256 differs from the recorded one is refused before any byte is downloaded.
    weights = official.HUBERT.files[2]
    monkeypatch.setattr(fetch_mod, "components", lambda _t: [Component("hubert", "hubert", (weights,), "hubert")])
    with pytest.raises(FetchError, match="pytorch_model.bin: the hub reports sha256 .* refusing to download it"):
        fetch_models("hubert", root, endpoint=hub.url)
    assert hub.gets("chinese-hubert-base/pytorch_model.bin") == []


def test_missing_file_and_unknown_family_are_one_line_errors(tmp_path, registry, hub):
    del hub.files["fake/config.json"]
    with pytest.raises(FetchError, match=r"could not download fake/config.json from http://127\.0\.0\.1:\d+/"):
        fetch_models("vtest", tmp_path / "m", endpoint=hub.url)
    with pytest.raises(GsvError, match="unknown model family 'v9'"):
        fetch_models("v9", tmp_path / "m", endpoint=hub.url)


def test_list_shows_present_missing_and_mismatch(tmp_path, registry, hub):
    root = tmp_path / "models"
    fetch_models("vtest", root, endpoint=hub.url)
    hub.requests.clear()
    rows = {s.path: s for s in list_models(root, targets=("v2", "hubert"))}
    assert hub.requests == []  # list never touches the network
    assert not rows["gsv-v2final-pretrained/s2G2333k.pth"].present
    assert rows["chinese-hubert-base/pytorch_model.bin"].used_by == ["v2", "hubert"]  # shared, listed once
    # an official path holding the wrong bytes is hashed and flagged
    bad = root / "gsv-v2final-pretrained/s2G2333k.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the official file")
    row = next(s for s in list_models(root, targets=("v2",)) if s.path == bad.relative_to(root).as_posix())
    assert row.present and row.size == 21 and row.verified == "MISMATCH"
    assert row.sha256 == hashlib.sha256(b"not the official file").hexdigest()


_CLI = """
import sys
from gsvkit.cli import app
from gsvkit.models import fetch, official
from gsvkit.models.official import Component, OfficialFile
real = official.components
files = (OfficialFile("fake/model.bin"), OfficialFile("fake/config.json"))
fetch.components = official.components = lambda t: [Component("vtest:dir", "hubert", files, "d")] \\
    if t == "vtest" else real(t)
app(sys.argv[1:], prog_name="gsv")
"""


def _gsv(args, env):
    return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_fetch_honours_hf_endpoint_and_lists(tmp_path, hub):
    import os

    src = str(Path(official.__file__).parents[2])
    env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": src, "GSVKIT_MODELS": str(tmp_path / "models")}
    r = _gsv(["models", "fetch", "vtest"], env)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert f"from {hub.url}/{REPO_ID} at revision {official.REVISION[:12]}" in out
    assert "only `gsv models fetch` uses it" in out
    assert "vtest: 2 files verified (2 downloaded" in out
    assert (tmp_path / "models" / "fake/model.bin").read_bytes() == BIG  # $GSVKIT_MODELS is the default folder
    r = _gsv(["models", "list", "--json"], env)
    data = json.loads(r.stdout)
    assert data["summary"]["v2"]["missing"] == 9
    assert data["summary"]["hubert"] == {"present": 0, "missing": 3, "mismatch": 0}
    r = _gsv(["models", "fetch", "v9"], env)
    assert r.returncode == 2 and "unknown model family 'v9'" in r.stderr and "Traceback" not in r.stderr


def test_every_family_names_its_files():
    for family in official.FAMILIES:
        roles = {c.role for c in official.components(family)}
        assert {"s1", "s2G", "hubert", "bert"} <= roles, family
    assert "sv" in {c.role for c in official.components("v2Pro")}
    paths = [f.path for c in official.components("v2") for f in c.files]
    assert "gsv-v2final-pretrained/s2G2333k.pth" in paths and "chinese-hubert-base/pytorch_model.bin" in paths
    assert len(official.REVISION) == 40


def test_another_revision_is_checked_against_the_hub(tmp_path, registry, hub):
    """The recorded checksums describe the pinned revision; at another one the hub's own sha256 is the check."""
    hub.files["fake/s2Gfake.pth"] = b"newer weights " * 100
    got = {s.path: s for s in fetch_models("vtest", tmp_path / "m", revision="main", endpoint=hub.url)}
    assert got["fake/s2Gfake.pth"].verified == "sha256 (hub)"
    assert any("/resolve/main/" in p for _m, p, _r in hub.requests)
    with pytest.raises(FetchError, match="s2Gfake.pth: the hub reports sha256"):  # pinned: the record wins
        fetch_models("vtest", tmp_path / "m2", endpoint=hub.url)
