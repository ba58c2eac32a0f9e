"""English G2P as upstream's ``english.en_G2p``: dictionary (CMUdict + upstream's extra and hot entries), g2p_en's
homograph table, possessives, wordsegment compounds, then g2p_en's neural model for what is left.

The POS tag only matters for homographs. Upstream calls NLTK's perceptron tagger, which needs a download; the
official fixtures were produced with every tag "NN" and so is the default here (``pos_tagger``): pass a callable
``list[str] -> list[tuple[str, str]]`` to plug a real tagger in.
"""

from __future__ import annotations

import gzip
import re
import sys
import threading
from collections.abc import Callable
from functools import lru_cache
from importlib import resources

from gsvkit.text.g2p.en_neural import default_model, load_homographs

PosTagger = Callable[[list[str]], list[tuple[str, str]]]
_DROP = {" ", "<pad>", "UW", "</s>", "<s>"}
_VOICELESS = {"P", "T", "K", "F", "TH", "HH"}
_SIBILANT = {"S", "Z", "SH", "ZH", "CH", "JH"}


def noun_tagger(words: list[str]) -> list[tuple[str, str]]:
    """The tagger the reference outputs were made with: every token is a noun."""
    return [(w, "NN") for w in words]


@lru_cache(maxsize=1)
def load_dictionary() -> dict[str, list[str]]:
    """word (lower case) → phones: cmudict.rep from line 57, cmudict-fast.rep for new words, then the hot dict.

    Every phone is one shared string object (there are about 70 distinct ones among the 140,000 entries): a string
    per phone occurrence made the table about 1.6 times as large in memory (73 MB against 45). Read only."""
    data = resources.files("gsvkit.text").joinpath("data")

    def phones(items: list[str]) -> list[str]:
        return [sys.intern(p) for p in items]

    table: dict[str, list[str]] = {}
    with data.joinpath("cmudict.rep.gz").open("rb") as f:
        lines = gzip.decompress(f.read()).decode("utf-8").splitlines()
    for line in lines[56:]:
        word, pron = line.strip().split("  ", 1)
        table[word.lower()] = phones(pron.split(" "))
    with data.joinpath("cmudict-fast.rep.gz").open("rb") as f:
        lines = gzip.decompress(f.read()).decode("utf-8").splitlines()
    for line in lines:
        parts = line.strip().split(" ")
        key = parts[0].lower()
        if key not in table:
            table[key] = phones(parts[1:])
    for line in data.joinpath("engdict-hot.rep").read_text("utf-8").splitlines():
        parts = line.strip().split(" ")
        if parts and parts[0]:
            table[parts[0].lower()] = phones(parts[1:])
    # upstream removes these abbreviations whose dictionary reading is wrong
    for word in ("ae", "ai", "ar", "ios", "hud", "os"):
        table.pop(word, None)
    return table


@lru_cache(maxsize=1)
def _homographs() -> dict[str, tuple[list[str], list[str], str]]:
    table = load_homographs()
    table["read"] = (["R", "IY1", "D"], ["R", "EH1", "D"], "VBP")
    table["complex"] = (
        ["K", "AH0", "M", "P", "L", "EH1", "K", "S"],
        ["K", "AA1", "M", "P", "L", "EH0", "K", "S"],
        "JJ",
    )
    return table


_ws_lock = threading.Lock()


@lru_cache(maxsize=1)
def _wordsegment():
    import wordsegment

    with _ws_lock:
        wordsegment.load()  # bundled unigram/bigram counts, no network
    return wordsegment


@lru_cache(maxsize=1)
def _tokenizer():
    from gsvkit.utils.imports import import_leaf

    # nltk's casual module alone (see gsvkit.utils.imports: the whole package costs 1.7 s and 136 MB); it
    # downloads nothing
    return import_leaf("nltk.tokenize.casual").TweetTokenizer().tokenize


class EnglishG2P:
    """Callable: normalised English text → ARPAbet phones (with upstream's punctuation marks)."""

    def __init__(self, pos_tagger: PosTagger | None = None) -> None:
        self.pos_tagger = pos_tagger or noun_tagger
        self.cmu = load_dictionary()
        self.homographs = _homographs()

    def word(self, o_word: str) -> list[str]:
        """Phones of one token (dictionary, possessive, compound split, neural fallback)."""
        word = o_word.lower()
        if len(word) > 1 and word in self.cmu:
            return self.cmu[word]
        if len(word) <= 3:  # short OOV: read the letters
            phones: list[str] = []
            for ch in word:
                if ch == "a":
                    phones.append("EY1")
                elif not ch.isalpha():
                    phones.append(ch)
                else:
                    phones.extend(self.cmu[ch])
            return phones
        if re.match(r"^([a-z]+)('s)$", word):
            phones = list(self.word(word[:-2]))
            if phones[-1] in _VOICELESS:
                phones.append("S")
            elif phones[-1] in _SIBILANT:
                phones.extend(["AH0", "Z"])
            else:
                phones.append("Z")
            return phones
        comps = _wordsegment().segment(word)
        if len(comps) == 1:
            return default_model().predict(word)
        return [p for comp in comps for p in self.word(comp)]

    def __call__(self, text: str) -> list[str]:
        prons: list[str] = []
        for o_word, pos in self.pos_tagger(_tokenizer()(text)):
            word = o_word.lower()
            if re.search("[a-z]", word) is None:
                pron = [word]
            elif len(word) == 1:
                pron = ["EY1"] if o_word == "A" else self.cmu[word]
            elif word in self.homographs:
                pron1, pron2, pos1 = self.homographs[word]
                if pos.startswith(pos1) or (len(pos) < len(pos1) and pos == pos1[: len(pos)]):
                    pron = pron1
                else:
                    pron = pron2
            else:
                pron = self.word(o_word)
            prons.extend(pron)
            prons.append(" ")
        return prons[:-1]


@lru_cache(maxsize=1)
def default_g2p() -> EnglishG2P:
    return EnglishG2P()


def g2p_en(norm_text: str, g2p: EnglishG2P | None = None) -> list[str]:
    """Phones of normalised English text; "'" becomes the phone "-", anything else off the table is dropped."""
    from gsvkit.text.symbols import symbol_set

    table = symbol_set("v2")
    out: list[str] = []
    for ph in (g2p or default_g2p())(norm_text):
        if ph in _DROP:
            continue
        ph = "UNK" if ph == "<unk>" else ph
        if ph in table:
            out.append(ph)
        elif ph == "'":
            out.append("-")
    return out
