"""Mandarin G2P: jieba words → pypinyin initials/finals → tone sandhi → erhua → opencpop-strict phones.

This is upstream's pypinyin path (the one its code takes without the g2pW model). Official v2 models were trained
on g2pW's per-character predictions, which differ for some polyphones (行, 长, 了, 还 …); ``polyphone_fix``
optionally applies upstream's word-level polyphone dictionary (data/polyphonic*.rep) as a better-informed seam.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import tempfile
import threading
from functools import lru_cache
from importlib import resources

from gsvkit.errors import TextError
from gsvkit.text.g2p.zh_sandhi import ToneSandhi
from gsvkit.text.normalize.zh import PUNCTUATION

_PUNCT_SET = frozenset(PUNCTUATION)
_SENT_SPLIT = re.compile(r"(?<=[{}])\s*".format(re.escape("".join(PUNCTUATION))))

MUST_ERHUA = frozenset("小院儿 胡同儿 范儿 老汉儿 撒欢儿 寻老礼儿 妥妥儿 媳妇儿".split())
NOT_ERHUA = frozenset(
    "虐儿 为儿 护儿 瞒儿 救儿 替儿 有儿 一儿 我儿 俺儿 妻儿 拐儿 聋儿 乞儿 患儿 幼儿 孤儿 婴儿 "
    "婴幼儿 连体儿 脑瘫儿 流浪儿 体弱儿 混血儿 蜜雪儿 舫儿 祖儿 美儿 应采儿 可儿 侄儿 孙儿 侄孙儿 女儿 男儿 红孩儿 "
    "花儿 虫儿 马儿 鸟儿 猪儿 猫儿 狗儿 少儿".split()
)
_FINAL_FIX = {"uei": "ui", "iou": "iu", "uen": "un"}
_ZERO_INITIAL = {"ing": "ying", "i": "yi", "in": "yin", "u": "wu"}
_ZERO_FIRST = {"v": "yu", "e": "e", "i": "y", "u": "w"}


@lru_cache(maxsize=1)
def pinyin_to_phones_map() -> dict[str, tuple[str, str]]:
    """opencpop-strict: pinyin syllable without tone → (initial phone, final phone)."""
    text = resources.files("gsvkit.text").joinpath("data", "opencpop-strict.txt").read_text("utf-8")
    table = {}
    for line in text.splitlines():
        if "\t" in line:
            syl, phones = line.strip().split("\t")
            c, v = phones.split(" ")
            table[syl] = (c, v)
    return table


@lru_cache(maxsize=1)
def polyphone_dict() -> dict[str, list[str]]:
    """Upstream's word → per-character TONE3 pinyin corrections (polyphonic.rep, then polyphonic-fix.rep)."""
    table: dict[str, list[str]] = {}
    data = resources.files("gsvkit.text").joinpath("data")
    texts = [data.joinpath("polyphonic.rep").read_text("utf-8")]
    with data.joinpath("polyphonic-fix.rep.gz").open("rb") as f:
        texts.append(gzip.decompress(f.read()).decode("utf-8"))
    for text in texts:
        for line in text.splitlines():
            if ":" not in line:
                continue
            word, pys = line.split(":", 1)
            table[word.strip()] = [p.strip() for p in pys.strip().strip("[]").replace("'", "").split(",")]
    return table


class _Jieba:
    """A private jieba tokenizer (quiet, cache under the user's temp dir), built on first use."""

    _lock = threading.Lock()
    _instance: _Jieba | None = None

    def __init__(self) -> None:
        import jieba
        import jieba.posseg

        jieba.setLogLevel(logging.WARNING)
        self.tok = jieba.Tokenizer()
        self.tok.tmp_dir = os.environ.get("GSVKIT_CACHE_DIR") or tempfile.gettempdir()
        self.tok.initialize()
        self.pos = jieba.posseg.POSTokenizer(self.tok)

    @classmethod
    def get(cls) -> _Jieba:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Jieba()
            return cls._instance


def _finals_tone3(word: str) -> list[str]:
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)


def _initials(word: str) -> list[str]:
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(word, neutral_tone_with_five=True, style=Style.INITIALS)


@lru_cache(maxsize=1)
def _sandhi() -> ToneSandhi:
    jb = _Jieba.get()
    return ToneSandhi(cut_for_search=lambda w: list(jb.tok.cut_for_search(w)), finals_of=_finals_tone3)


def _merge_erhua(initials: list[str], finals: list[str], word: str, pos: str) -> tuple[list[str], list[str]]:
    for i, f in enumerate(finals):
        if i == len(finals) - 1 and word[i] == "儿" and f == "er1":
            finals[i] = "er2"
    if word not in MUST_ERHUA and (word in NOT_ERHUA or pos in {"a", "j", "nr"}):
        return initials, finals
    if len(finals) != len(word):
        return initials, finals
    new_finals: list[str] = []
    for i, f in enumerate(finals):
        if (
            i == len(finals) - 1
            and word[i] == "儿"
            and f in {"er2", "er5"}
            and word[-2:] not in NOT_ERHUA
            and new_finals
        ):
            f = "er" + new_finals[-1][-1]  # 儿 keeps its own syllable, with the tone of the one before
        new_finals.append(f)
    return list(initials), new_finals


def _fix_by_dictionary(word: str, initials: list[str], finals: list[str]) -> tuple[list[str], list[str]]:
    fixed = polyphone_dict().get(word)
    if not fixed or len(fixed) != len(word):
        return initials, finals
    from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

    return [to_initials(p) for p in fixed], [to_finals_tone3(p, neutral_tone_with_five=True) for p in fixed]


def _syllable_phones(c: str, v: str) -> list[str]:
    table = pinyin_to_phones_map()
    v_plain, tone = v[:-1], v[-1]
    if tone not in "12345":
        raise TextError(f"no Mandarin reading for {c + v!r}; remove or rewrite that character")
    pinyin = c + v_plain
    if c:
        if v_plain in _FINAL_FIX:
            pinyin = c + _FINAL_FIX[v_plain]
    elif pinyin in _ZERO_INITIAL:
        pinyin = _ZERO_INITIAL[pinyin]
    elif pinyin and pinyin[0] in _ZERO_FIRST:
        pinyin = _ZERO_FIRST[pinyin[0]] + pinyin[1:]
    if pinyin not in table:
        raise TextError(f"pinyin {pinyin!r} (from {c + v!r}) is not in the phone table; rewrite that character")
    new_c, new_v = table[pinyin]
    return [new_c, new_v + tone]


def g2p_zh(norm_text: str, polyphone_fix: bool = False, erhua: bool = True) -> tuple[list[str], list[int]]:
    """Phones and word2ph (phones per character) of normalised Mandarin text.

    ``erhua=False`` is upstream's v1 module (``chinese.py``), which is the same without the erhua step.
    """
    sentences = [s for s in _SENT_SPLIT.split(norm_text) if s.strip() != ""]
    if not sentences:
        return [], []
    jb = _Jieba.get()
    sandhi = _sandhi()
    phones: list[str] = []
    word2ph: list[int] = []
    for seg in sentences:
        seg = re.sub("[a-zA-Z]+", "", seg)
        words = sandhi.pre_merge([(w.word, w.flag) for w in jb.pos.lcut(seg)])
        initials: list[str] = []
        finals: list[str] = []
        for word, pos in words:
            if pos == "eng":
                continue
            sub_i, sub_f = _initials(word), _finals_tone3(word)
            if polyphone_fix:
                sub_i, sub_f = _fix_by_dictionary(word, sub_i, sub_f)
            sub_f = sandhi.modified_tone(word, pos, sub_f)
            if erhua:
                sub_i, sub_f = _merge_erhua(sub_i, sub_f, word, pos)
            initials += sub_i
            finals += sub_f
        for c, v in zip(initials, finals, strict=False):
            if c == v:
                if c not in _PUNCT_SET:
                    raise TextError(f"no Mandarin reading for {c!r}; remove or rewrite it")
                phones.append(c)
                word2ph.append(1)
            else:
                ph = _syllable_phones(c, v)
                phones += ph
                word2ph.append(len(ph))
    return phones, word2ph
