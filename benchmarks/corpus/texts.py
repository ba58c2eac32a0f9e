"""Sentences for the synthetic corpus: Debian's `fortunes` cookies and the King James Bible (`bible-kjv`).

Only short, plainly readable sentences are kept (4-25 words of letters and ordinary punctuation, no digits,
no dialogue or attributions), so every engine reads them the same way and a word error rate measures the
voice, not the text. Both sources are public domain or freely redistributable Debian packages.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Collections without ASCII art, code or verse layout.
FORTUNE_FILES = (
    "fortunes", "wisdom", "platitudes", "people", "work", "education", "food", "science", "literature", "love",
    "men-women", "miscellaneous", "humorists", "politics", "pets", "medicine", "law", "kids", "sports", "news",
)
_OK = re.compile(r"^[A-Za-z][A-Za-z ,.;:'!?-]*[.!?]$")
_BIBLE_VERSE = re.compile(r"^\s*\d+ (.*)$")


def clean(sentence: str) -> str | None:
    """The sentence on one line with ordinary spacing, or None when it is not plainly readable."""
    s = " ".join(sentence.replace("`", "'").split())
    s = re.sub(r"\b([A-Z])([A-Z]{2,})\b", lambda m: m.group(1) + m.group(2).lower(), s)  # LORD -> Lord
    if "--" in s or " - " in s or not _OK.match(s):
        return None
    words = s.split()
    if not 4 <= len(words) <= 25:
        return None
    return s


def fortune_sentences(fortune_dir: Path = FORTUNE_DIR) -> list[str]:
    """Readable one-sentence-ish cookies from the chosen fortune collections."""
    out: list[str] = []
    for name in FORTUNE_FILES:
        path = fortune_dir / name
        if not path.is_file():
            continue
        for cookie in path.read_text(encoding="latin-1").split("\n%\n"):
            if "\n\t" in cookie or "\n " in cookie or ":\n" in cookie:  # attributions, verse, dialogue
                continue
            s = clean(cookie)
            if s:
                out.append(s)
    return out


def bible_sentences() -> list[str]:
    """Readable verses of the King James Bible, printed by the `bible` program of the `bible-kjv` package."""
    exe = shutil.which("bible")
    if exe is None:
        return []
    text = subprocess.run(
        [exe, "-l", "100000", "Gen1:1-Rev22:21"], capture_output=True, text=True, encoding="latin-1", check=True
    ).stdout
    out = []
    for line in text.splitlines():
        m = _BIBLE_VERSE.match(line)
        if m:
            s = clean(m.group(1))
            if s:
                out.append(s)
    return out


def sentence_pool(seed: int = 0) -> list[str]:
    """All usable sentences, deduplicated, shuffled with `seed`, fortunes and verses interleaved."""
    fortunes, verses = sorted(set(fortune_sentences())), sorted(set(bible_sentences()))
    if not fortunes and not verses:
        raise SystemExit("no sentences: install the `fortunes` and `bible-kjv` packages (benchmarks/corpus/install.sh)")
    rng = random.Random(seed)
    rng.shuffle(fortunes)
    rng.shuffle(verses)
    pool: list[str] = []
    for i in range(max(len(fortunes), len(verses))):
        pool += [s[i] for s in (fortunes, verses) if i < len(s)]
    seen: set[str] = set()
    return [s for s in pool if not (s in seen or seen.add(s))]
