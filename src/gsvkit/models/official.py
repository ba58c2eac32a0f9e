"""The official GPT-SoVITS files: where they are published, what each family needs, where gsvkit finds them.

The files live in the public Hugging Face model repository `lj1995/GPT-SoVITS`. A models folder laid out like
that repository (which is also upstream's `GPT_SoVITS/pretrained_models/`) is what every command looks in by
default: `$GSVKIT_MODELS`, else `./models`. Only `gsv models fetch` downloads into it (see `gsvkit.models.fetch`).

Checksums: `official_files.json` lists every component's files with the sizes and sha256 published for revision
`REVISION` by several independent public install scripts; they have not been recomputed here (nothing can be
downloaded on the machine this was written on). Where none is known the download is checked against the sha256
the hub itself reports for the file (the etag of an LFS file), and small non-LFS files against their git blob id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from gsvkit.errors import GsvError

MODELS_ENV = "GSVKIT_MODELS"
DEFAULT_MODELS_DIR = "models"

Role = Literal["hubert", "bert", "sv", "s1", "s2G", "s2D", "vocoder"]


@dataclass(frozen=True)
class OfficialFile:
    """One file of the repository: its path there (and under the models folder), size and sha256 if known."""

    path: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Component:
    """A set of files fetched together: a model directory (hubert, bert) or one role of a family."""

    name: str
    role: Role
    files: tuple[OfficialFile, ...]
    description: str

    @property
    def location(self) -> str:
        """What commands are given: the directory for transformers models, else the one file."""
        if self.role in ("hubert", "bert") or len(self.files) > 1:
            return str(Path(self.files[0].path).parent)
        return self.files[0].path


def _read_manifest() -> dict:
    with open(Path(__file__).with_name("official_files.json"), encoding="utf-8") as f:
        return json.load(f)


def _files(rows: list[dict]) -> tuple[OfficialFile, ...]:
    return tuple(OfficialFile(r["path"], r.get("size"), r.get("sha256")) for r in rows)


_MANIFEST = _read_manifest()
REPO_ID: str = _MANIFEST["repo_id"]
# The commit of REPO_ID that the checksums describe (the repository's main branch as of 2026).
REVISION: str = _MANIFEST["revision"]
HUBERT, BERT, SV = (
    Component(name, cast(Role, name), _files(entry["files"]), entry["description"])
    for name, entry in ((n, _MANIFEST["shared"][n]) for n in ("hubert", "bert", "sv"))
)
# Per family: the s1 (GPT) and s2 (SoVITS generator, discriminator or vocoder) files, as upstream's config.py
# and README name them; every family also needs HuBERT and BERT, v2Pro/v2ProPlus the speaker encoder.
_FAMILY_FILES: dict[str, dict[Role, tuple[OfficialFile, ...]]] = {
    family: {cast(Role, role): _files(rows) for role, rows in roles.items()}
    for family, roles in _MANIFEST["families"].items()
}
FAMILIES: tuple[str, ...] = tuple(_FAMILY_FILES)
SHARED: dict[str, Component] = {c.name: c for c in (HUBERT, BERT, SV)}
TARGETS: tuple[str, ...] = FAMILIES + tuple(SHARED)

_ROLE_TEXT = {"s1": "pretrained s1 (GPT)", "s2G": "pretrained s2 generator (SoVITS)",
              "s2D": "pretrained s2 discriminator", "vocoder": "vocoder"}  # fmt: skip


def components(target: str) -> list[Component]:
    """What `gsv models fetch TARGET` downloads: a family's own files plus the shared models it needs."""
    if target in SHARED:
        return [SHARED[target]]
    if target not in _FAMILY_FILES:
        raise GsvError(f"unknown model family {target!r}; choose one of {', '.join(TARGETS)}")
    own = [Component(f"{target}:{role}", role, files, f"{target} {_ROLE_TEXT[role]}")
           for role, files in _FAMILY_FILES[target].items()]  # fmt: skip
    shared = [HUBERT, BERT] + ([SV] if target in ("v2Pro", "v2ProPlus") else [])
    return own + shared


def models_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The models folder: `explicit`, else `$GSVKIT_MODELS`, else `./models`."""
    return Path(explicit or os.environ.get(MODELS_ENV) or DEFAULT_MODELS_DIR)


def _component(role: Role, family: str) -> Component:
    if role in ("hubert", "bert", "sv"):
        return SHARED[role]
    return next(c for c in components(family) if c.role == role)


def default_path(role: Role, family: str = "v2", root: str | os.PathLike | None = None) -> Path | None:
    """The models folder's file (or directory) for `role` of `family`, if every file of it is there."""
    comp = _component(role, family)
    base = models_dir(root)
    if all((base / f.path).is_file() for f in comp.files):
        return base / comp.location
    if role in ("hubert", "bert"):
        # the same model saved (or converted) as safetensors is just as good as the published .bin
        d = base / comp.location
        if (d / "config.json").is_file() and (d / "model.safetensors").is_file():
            return d
    return None


def fetch_hint(role: Role, family: str = "v2", root: str | os.PathLike | None = None) -> str:
    """A sentence naming what is missing and the command that supplies it."""
    comp = _component(role, family)
    target = role if role in SHARED else family
    where = models_dir(root) / comp.location
    dir_opt = f" --dir {root}" if root else ""
    return f"{where} is missing: run `gsv models fetch {target}{dir_opt}` (the folder is ${MODELS_ENV} or ./models)"


def resolve(
    given: str | os.PathLike | None, role: Role, family: str = "v2", recorded: str | os.PathLike | None = None
) -> Path | None:
    """An explicit path wins, then one a voice recorded (if it still exists), then the models folder's copy."""
    if given:
        return Path(given)
    if recorded and Path(recorded).exists():
        return Path(recorded)
    return default_path(role, family)
