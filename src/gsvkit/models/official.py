"""The official GPT-SoVITS files: where they are published, what each family needs, where gsvkit finds them.

The files live in the public Hugging Face model repository `lj1995/GPT-SoVITS`. A models folder laid out like
that repository (which is also upstream's `GPT_SoVITS/pretrained_models/`) is what every command looks in by
default: `$GSVKIT_MODELS`, else `./models`. Only `gsv models fetch` downloads into it (see `gsvkit.models.fetch`).

Checksums: the sha256 and sizes below are the ones published for revision `REVISION` by several independent
public install scripts; they have not been recomputed here (nothing can be downloaded on the machine this was
written on). Where none is known (`sha256=None`) the download is checked against the sha256 the hub itself reports
for the file (the etag of an LFS file), and small non-LFS files against their git blob id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gsvkit.errors import GsvError

REPO_ID = "lj1995/GPT-SoVITS"
# The commit of REPO_ID that the checksums below describe (the repository's main branch as of 2026).
REVISION = "336b2ec4e8d4ac74740798dd40af44e74659ecaf"
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


def _f(path: str, size: int | None = None, sha256: str | None = None) -> OfficialFile:
    return OfficialFile(path, size, sha256)


HUBERT = Component("hubert", "hubert", (
    _f("chinese-hubert-base/config.json", 1449, "c3e5060a1277e0f078cc6be9da4528a605dba6ece93018981fe2c820e5c7b103"),
    _f("chinese-hubert-base/preprocessor_config.json", 212,
       "dcd684124d06722947939d41ea6ae58dbf10968c60a11a29f23ddc602c64a29b"),
    _f("chinese-hubert-base/pytorch_model.bin", 188811417,
       "24164f129c66499d1346e2aa55f183250c223161ec2770c0da3d3b08cf432d3c"),
), "HuBERT (chinese-hubert-base): audio features for prepare and references")  # fmt: skip
BERT = Component("bert", "bert", (
    _f("chinese-roberta-wwm-ext-large/config.json", 963,
       "3d57de2fd7e80d0e5c8ff194f0bbb6baa10df7e43fc262a0cc71298a78b0a3e5"),
    _f("chinese-roberta-wwm-ext-large/pytorch_model.bin", 651225145,
       "e53a693acc59ace251d143d068096ae0d7b79e4b1b503fa84c9dcf576448c1d8"),
    _f("chinese-roberta-wwm-ext-large/tokenizer.json", 268962,
       "173796956820ea27bd14f76bf28162607ff4254807e2948253eb5b46f5bb643b"),
), "Chinese BERT (chinese-roberta-wwm-ext-large): text features for zh")  # fmt: skip
SV = Component("sv", "sv", (
    _f("sv/pretrained_eres2netv2w24s4ep4.ckpt", 107528697,
       "4f5a0bf73c61eb41b174e1bb54e7ee3c83233892be8e0af1f187024e8e581a35"),
), "speaker-verification encoder (ERes2NetV2) of v2Pro/v2ProPlus")  # fmt: skip

_S1_V3 = _f("s1v3.ckpt", 155284856, "87133414860ea14ff6620c483a3db5ed07b44be42e2c3fcdad65523a729a745a")

# Per family: the s1 (GPT) and s2 (SoVITS generator, discriminator or vocoder) files, as upstream's config.py
# and README name them; every family also needs HuBERT and BERT, v2Pro/v2ProPlus the speaker encoder.
_FAMILY_FILES: dict[str, dict[Role, tuple[OfficialFile, ...]]] = {
    "v1": {
        "s1": (_f("s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt", None,
                  "b1c1e17e9c99547a89388f72048cd6e1b41b5a18b170e86a46dfde0324d63eb1"),),
        "s2G": (_f("s2G488k.pth", None, "020a014e1e01e550e510f2f61fae5e5f5b6aab40f15c22f1f12f724df507e835"),),
        "s2D": (_f("s2D488k.pth", None, "fc579c1db3c1e21b721001cf99d7a584214280df19b002e200b630a34fa06eb8"),),
    },
    "v2": {
        "s1": (_f("gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt", None,
                  "732f94e63b148066e24c7f9d2637f3374083e637635f07fbdb695dee20ddbe1f"),),
        "s2G": (_f("gsv-v2final-pretrained/s2G2333k.pth", None,
                   "924fdccaa3c574bf139c25c9759aa1ed3b3f99e19a7c529ee996c2bc17663695"),),
        "s2D": (_f("gsv-v2final-pretrained/s2D2333k.pth", None,
                   "8ae7fe8dd8c8f2e718de359e00edac88b0c71ab2fd10b07ad4cc45070eb8a836"),),
    },
    "v2Pro": {
        "s1": (_S1_V3,),
        "s2G": (_f("v2Pro/s2Gv2Pro.pth", 162303657,
                   "0f8ead815234365edf045c6d86370ed6e4f440e8195be77ff0ea72684ad406a5"),),
        "s2D": (_f("v2Pro/s2Dv2Pro.pth", None, "257a7f36ae49e9ff08790d2cd3d398592530852caba810197f8606e884a52c54"),),
    },
    "v2ProPlus": {
        "s1": (_S1_V3,),
        "s2G": (_f("v2Pro/s2Gv2ProPlus.pth", None,
                   "d42a22bbbf65fb2bbdd45ad6a66841156977db45c7aabe0a6992ff378d9c7d3b"),),
        "s2D": (_f("v2Pro/s2Dv2ProPlus.pth", None,
                   "635cd84bf6f7f9b8d41c88c7106f81d782c794c61f931845214ea037b0c5bef2"),),
    },
    "v3": {
        "s1": (_S1_V3,),
        "s2G": (_f("s2Gv3.pth"),),
        "vocoder": (_f("models--nvidia--bigvgan_v2_24khz_100band_256x/bigvgan_generator.pt"),
                    _f("models--nvidia--bigvgan_v2_24khz_100band_256x/config.json")),
    },
    "v4": {
        "s1": (_S1_V3,),
        "s2G": (_f("gsv-v4-pretrained/s2Gv4.pth"),),
        "vocoder": (_f("gsv-v4-pretrained/vocoder.pth"),),
    },
}  # fmt: skip
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
