"""Phone inventories of the official models and the phone → id mapping.

The v1 table (322 symbols) and the v2 table (732 symbols: v1 plus "[", "]", Korean and Cantonese phones) are
upstream's sorted symbol lists, stored verbatim as JSON in ``data/``. An id is an index into that list, so the
order is part of the trained models and must never change.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from gsvkit.errors import TextError

VERSIONS = ("v1", "v2")
UNK = "UNK"


def _check_version(version: str) -> str:
    # v2Pro/v2ProPlus/v3/v4 share the v2 table.
    if version in ("v2", "v2Pro", "v2ProPlus", "v3", "v4"):
        return "v2"
    if version == "v1":
        return "v1"
    raise TextError(f"unknown symbol table version {version!r}; use 'v1' or 'v2'")


@cache
def symbols(version: str = "v2") -> tuple[str, ...]:
    """The symbol table of ``version`` ('v1' or 'v2'), in id order."""
    version = _check_version(version)
    text = resources.files("gsvkit.text").joinpath("data", f"symbols_{version}.json").read_text("utf-8")
    return tuple(json.loads(text))


@cache
def symbol_to_id(version: str = "v2") -> dict[str, int]:
    """Mapping phone → id for ``version``."""
    return {s: i for i, s in enumerate(symbols(version))}


@cache
def symbol_set(version: str = "v2") -> frozenset[str]:
    return frozenset(symbols(version))


def phones_to_ids(phones: list[str], version: str = "v2") -> list[int]:
    """Turn phones into ids of the ``version`` table (upstream's ``cleaned_text_to_sequence``).

    Raises:
        TextError: a phone that is not in the table (clean_text already maps unknown phones to "UNK").
    """
    table = symbol_to_id(version)
    try:
        return [table[p] for p in phones]
    except KeyError as e:
        raise TextError(
            f"phone {e.args[0]!r} is not in the {_check_version(version)} symbol table; "
            "phones must come from clean_text (v1 has no Korean/Cantonese phones)"
        ) from None
