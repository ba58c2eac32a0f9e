"""Traditional → simplified Chinese, character by character.

The table (data/zh_t2s.tsv) is PaddleSpeech's char_convert table (Apache-2.0) as GPT-SoVITS vendors it, kept
where a character maps to a different one; it is not OpenCC's (e.g. 鍾 → 锺, 著 stays 著).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _table() -> dict[int, str]:
    path = resources.files("gsvkit.text").joinpath("data", "zh_t2s.tsv")
    if not path.is_file():
        return {}
    table: dict[int, str] = {}
    for line in path.read_text("utf-8").splitlines():
        if "\t" in line and not line.startswith("#"):
            trad, simp = line.split("\t", 1)
            table[ord(trad)] = simp
    return table


def traditional_to_simplified(text: str) -> str:
    """Map each traditional character to its simplified form; other characters are kept."""
    return text.translate(_table())
