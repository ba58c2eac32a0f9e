"""`gsv models fetch` and `gsv models list`: the official files, downloaded with huggingface_hub and checked.

`fetch_models` is the only code in gsvkit that uses the network. It downloads into the models folder with the
repository's layout (huggingface_hub's `local_dir` mode: a dropped connection is resumed with a Range request,
a file already there with the hub's etag is not downloaded again), at the pinned revision, and checks every file
before it counts: against the sha256 recorded in `gsvkit.models.official` where one is known, else against what
the hub reports (the sha256 etag of an LFS file, the git blob id of a small one). A file that fails the check is
removed and reported. The hub library's own settings apply (HF_ENDPOINT for a mirror, HF_TOKEN, HTTPS_PROXY,
HF_HUB_DOWNLOAD_TIMEOUT).

`gsvkit-models.json` in the models folder records what was fetched and verified (revision, commit, size,
sha256), so that `list_models` can show hashes without reading gigabytes again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gsvkit.errors import GsvError
from gsvkit.models.official import REPO_ID, REVISION, TARGETS, OfficialFile, components, models_dir
from gsvkit.utils.io import atomic_write_text

MANIFEST = "gsvkit-models.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


class FetchError(GsvError):
    """A download that failed, or a downloaded file that is not what the repository publishes."""


@dataclass
class FileStatus:
    """One official file in a models folder (`list_models`) or just fetched (`fetch_models`)."""

    target: str
    component: str
    path: str
    present: bool
    size: int | None = None
    sha256: str | None = None
    expected_sha256: str | None = None
    verified: str = ""  # how the content was checked: "sha256 (registry)", "sha256 (hub)", "git blob (hub)"
    revision: str | None = None
    downloaded: bool = False
    used_by: list[str] = field(default_factory=list)  # the families (or shared models) that need this file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ hashing
def file_digests(path: Path, git_blob: bool = False) -> tuple[str, str | None]:
    """(sha256, git blob sha1 or None) of a file, read once."""
    sha = hashlib.sha256()
    blob = None
    if git_blob:
        blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's object id, not security
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return sha.hexdigest(), blob.hexdigest() if blob is not None else None


def _read_manifest(root: Path) -> dict[str, dict[str, Any]]:
    path = root / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged record only costs re-hashing
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _write_manifest(root: Path, files: dict[str, dict[str, Any]]) -> None:
    body = {"repo": REPO_ID, "files": dict(sorted(files.items()))}
    atomic_write_text(root / MANIFEST, json.dumps(body, indent=2) + "\n")


def _recorded(entry: dict[str, Any] | None, path: Path) -> dict[str, Any] | None:
    """The manifest entry, if the file on disk is still the one it describes (same size and mtime)."""
    if not entry or not path.is_file():
        return None
    st = path.stat()
    if entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
        return None
    return entry


# ------------------------------------------------------------------------------------------------ fetch
def _hub_error(err: Exception, f: OfficialFile, revision: str, endpoint: str | None) -> FetchError:
    from huggingface_hub import constants

    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return FetchError(
        f"could not download {f.path} from {endpoint or constants.ENDPOINT}/{REPO_ID} at revision {revision}: {reason} "
        "(check the network, HF_ENDPOINT or HTTPS_PROXY, then run the same command again)"
    )


def _expected(f: OfficialFile, etag: str | None, revision: str) -> tuple[str, str]:
    """(digest, kind) the downloaded file must have: the registry's sha256, else what the hub reports."""
    hub = (etag or "").lower()
    if f.sha256 and revision == REVISION:  # the recorded checksums describe the pinned revision only
        if _HEX64.match(hub) and hub != f.sha256:
            raise FetchError(
                f"{f.path}: the hub reports sha256 {hub} at revision {revision}, but the official file is "
                f"{f.sha256}; refusing to download it (a mirror serving other files?)"
            )
        return f.sha256, "sha256 (registry)"
    if _HEX64.match(hub):
        return hub, "sha256 (hub)"
    if _HEX40.match(hub):
        return hub, "git blob (hub)"
    raise FetchError(
        f"{f.path}: the hub gave no checksum for this file (etag {etag!r}) and none is recorded; refusing to use "
        "an unverifiable download"
    )


def _discard(root: Path, f: OfficialFile) -> None:
    """Remove a rejected download and huggingface_hub's record of it, so the next fetch starts afresh."""
    with contextlib.suppress(OSError):
        (root / f.path).unlink()
    with contextlib.suppress(ImportError, OSError):  # the library's record of the file, where its version keeps it
        from huggingface_hub._local_folder import get_local_download_paths

        get_local_download_paths(root, f.path).metadata_path.unlink()


def fetch_models(
    target: str,
    root: str | os.PathLike | None = None,
    revision: str = REVISION,
    endpoint: str | None = None,
    token: str | bool | None = None,
    say: Callable[[str], Any] = lambda _s: None,
) -> list[FileStatus]:
    """Download every file `target` (a family, or hubert/bert/sv) needs into the models folder, verified.

    Returns one `FileStatus` per file (`downloaded` is False for a file that was already there and verified).
    Raises `FetchError` naming the file when a download fails or its content does not match.
    """
    wanted = components(target)  # raises for an unknown target, before anything is created
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    base = models_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(base)
    out: list[FileStatus] = []
    for comp in wanted:
        for f in comp.files:
            local = base / f.path
            status = FileStatus(target, comp.name, f.path, False, f.size, expected_sha256=f.sha256, revision=revision)
            known = _recorded(manifest.get(f.path), local)
            if known and f.sha256 and known.get("sha256") == f.sha256 and revision == REVISION:
                # Verified by an earlier fetch and untouched since: no need to ask the hub again.
                status.present, status.sha256, status.verified = True, f.sha256, known.get("verified", "")
                status.size = known["size"]
                out.append(status)
                say(f"  ok    {f.path} (already verified)")
                continue
            before = (local.stat().st_size, local.stat().st_mtime_ns) if local.is_file() else None
            url = hf_hub_url(REPO_ID, f.path, revision=revision, endpoint=endpoint)
            try:
                meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
                expected, kind = _expected(f, meta.etag, revision)
                if f.size is not None and meta.size is not None and meta.size != f.size and revision == REVISION:
                    raise FetchError(f"{f.path}: the hub reports {meta.size} bytes, the official file has {f.size}")
                say(f"  get   {f.path}" + (f" ({meta.size / 1e6:.1f} MB)" if meta.size else ""))
                path = Path(hf_hub_download(REPO_ID, f.path, revision=revision, local_dir=base, endpoint=endpoint,
                                            token=token))  # fmt: skip
            except FetchError:
                raise
            except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as err:
                raise _hub_error(err, f, revision, endpoint) from None
            except Exception as err:  # httpx transport errors and the like: still one line, naming the file
                raise _hub_error(err, f, revision, endpoint) from None
            sha, blob = file_digests(path, git_blob=kind.startswith("git"))
            actual = blob if kind.startswith("git") else sha
            if actual != expected:
                _discard(base, f)
                raise FetchError(
                    f"{f.path}: downloaded content does not match ({kind}: expected {expected}, got {actual}); the "
                    "file was removed. Run the same command again; if it fails again the source is serving a "
                    "different file"
                )
            st = path.stat()
            manifest[f.path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha, "verified": kind,
                                "revision": revision, "commit": meta.commit_hash}  # fmt: skip
            _write_manifest(base, manifest)
            status.present, status.size, status.sha256, status.verified = True, st.st_size, sha, kind
            status.downloaded = before != (st.st_size, st.st_mtime_ns)  # huggingface_hub kept a current file
            out.append(status)
    return out


# ------------------------------------------------------------------------------------------------ list
def list_models(
    root: str | os.PathLike | None = None, hash_files: bool = True, targets: tuple[str, ...] = TARGETS
) -> list[FileStatus]:
    """Every official file of `targets`: present or missing, size, sha256, and whether it matches the record.

    Offline: reads only the folder. A file's sha256 comes from the fetch record when the file is unchanged since,
    else it is computed (`hash_files=False` skips that).
    """
    base = models_dir(root)
    manifest = _read_manifest(base)
    seen: dict[str, FileStatus] = {}
    for target in targets:
        for comp in components(target):
            for f in comp.files:
                if f.path in seen:  # a shared file (HuBERT, BERT, s1v3.ckpt) is listed once
                    seen[f.path].used_by.append(target)
                    continue
                local = base / f.path
                s = FileStatus(target, comp.name, f.path, local.is_file(), expected_sha256=f.sha256, used_by=[target])
                seen[f.path] = s
                if not s.present:
                    continue
                s.size = local.stat().st_size
                known = _recorded(manifest.get(f.path), local)
                if known:
                    s.sha256, s.verified, s.revision = known.get("sha256"), known.get("verified", ""), known.get(
                        "revision")  # fmt: skip
                elif hash_files:
                    s.sha256 = file_digests(local)[0]
                if s.sha256 and f.sha256:
                    s.verified = "sha256 (registry)" if s.sha256 == f.sha256 else "MISMATCH"
    return list(seen.values())


def summarize(statuses: list[FileStatus]) -> dict[str, dict[str, int]]:
    """Per family (or shared model): its files present, missing, and failing their recorded checksum."""
    out: dict[str, dict[str, int]] = {}
    for s in statuses:
        for target in s.used_by:
            row = out.setdefault(target, {"present": 0, "missing": 0, "mismatch": 0})
            row["present" if s.present else "missing"] += 1
            row["mismatch"] += s.verified == "MISMATCH"
    return out
