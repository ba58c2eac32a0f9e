"""Chinese text normalisation: what upstream's ``chinese2.text_normalize`` (and the Cantonese variant) produce.

Pipeline: split into sentences → per sentence traditional→simplified, full-width→half-width letters/digits,
numbers/dates/times/units verbalised (``zh_num``), symbols spelled or removed → punctuation mapped to the
phone-table marks and everything else that is not a Han character removed → runs of marks collapsed.
"""

from __future__ import annotations

import re
import string

from gsvkit.text.normalize import zh_num as n
from gsvkit.text.normalize.zh_chars import traditional_to_simplified
from gsvkit.text.punctuation import CJK_MARKS

PUNCTUATION = ("!", "?", "…", ",", ".", "-")  # the marks the phone table has
_PUNCT_CLASS = "".join(re.escape(p) for p in PUNCTUATION)

_F2H = {ord(c) + 65248: ord(c) for c in string.ascii_letters + string.digits}
_SENTENCE_SPLIT = re.compile(r"([：、，；。？！,;?!][”’]?)")
_SPLIT_DROP = re.compile(r"[——《》【】<>{}()（）#&@“”^_|\\]")
_POST_DROP = re.compile(r"[-——《》【】<=>{}()（）#&@“”^_|\\]")
_GREEK = (
    ("α", "阿尔法"),
    ("β", "贝塔"),
    ("γ", "伽玛"),
    ("Γ", "伽玛"),
    ("δ", "德尔塔"),
    ("Δ", "德尔塔"),
    ("ε", "艾普西龙"),
    ("ζ", "捷塔"),
    ("η", "依塔"),
    ("θ", "西塔"),
    ("Θ", "西塔"),
    ("ι", "艾欧塔"),
    ("κ", "喀帕"),
    ("λ", "拉姆达"),
    ("Λ", "拉姆达"),
    ("μ", "缪"),
    ("ν", "拗"),
    ("ξ", "克西"),
    ("Ξ", "克西"),
    ("ο", "欧米克伦"),
    ("π", "派"),
    ("Π", "派"),
    ("ρ", "肉"),
    ("ς", "西格玛"),
    ("Σ", "西格玛"),
    ("σ", "西格玛"),
    ("τ", "套"),
    ("υ", "宇普西龙"),
    ("φ", "服艾"),
    ("Φ", "服艾"),
    ("χ", "器"),
    ("ψ", "普赛"),
    ("Ψ", "普赛"),
    ("ω", "欧米伽"),
    ("Ω", "欧米伽"),
)
_POST_MAP = (
    [("/", "每")]
    + [(c, w) for c, w in zip("①②③④⑤⑥⑦⑧⑨⑩", "一二三四五六七八九十", strict=True)]
    + list(_GREEK)
    + [("+", "加"), ("-", "减"), ("×", "乘"), ("÷", "除"), ("=", "等")]
)

# punctuation → phone-table mark (zh); yue maps quotes/brackets to "'" and keeps runs of marks
ZH_PUNCT_MAP = {
    **CJK_MARKS,
    "$": ".",
    "/": ",",
    "—": "-",
    "~": "…",
    "～": "…",
}
YUE_PUNCT_MAP = {
    **CJK_MARKS,
    "$": ".",
    "“": "'",
    "”": "'",
    '"': "'",
    "‘": "'",
    "’": "'",
    "（": "'",
    "）": "'",
    "(": "'",
    ")": "'",
    "《": "'",
    "》": "'",
    "【": "'",
    "】": "'",
    "[": "'",
    "]": "'",
    "—": "-",
    "～": "-",
    "~": "-",
    "「": "'",
    "」": "'",
}


def split_sentences(text: str) -> list[str]:
    """Upstream's sentence split: spaces and brackets/quotes removed, a break after each clause mark."""
    text = _SPLIT_DROP.sub("", text.replace(" ", ""))
    text = _SENTENCE_SPLIT.sub(r"\1\n", text).strip()
    return [s.strip() for s in re.split(r"\n+", text)]


def _post_replace(sentence: str) -> str:
    for src, dst in _POST_MAP:
        sentence = sentence.replace(src, dst)
    return _POST_DROP.sub("", sentence)


def normalize_sentence(sentence: str) -> str:
    """Verbalise the numbers, dates, times, units and symbols of one sentence."""
    s = traditional_to_simplified(sentence).translate(_F2H)
    s = n.RE_DATE.sub(n.replace_date, s)
    s = n.RE_DATE2.sub(n.replace_date2, s)
    s = n.RE_TIME_RANGE.sub(n.replace_time, s)
    s = n.RE_TIME.sub(n.replace_time, s)
    s = n.RE_TO_RANGE.sub(n.replace_to_range, s)
    s = n.RE_TEMPERATURE.sub(n.replace_temperature, s)
    s = n.replace_measure(s)
    while n.RE_ASMD.search(s):
        s = n.RE_ASMD.sub(n.replace_asmd, s)
    s = n.RE_POWER.sub(n.replace_power, s)
    s = n.RE_FRAC.sub(n.replace_frac, s)
    s = n.RE_PERCENTAGE.sub(n.replace_percentage, s)
    s = n.RE_MOBILE_PHONE.sub(n.replace_mobile, s)
    s = n.RE_TELEPHONE.sub(n.replace_phone, s)
    s = n.RE_NATIONAL_UNIFORM_NUMBER.sub(n.replace_phone, s)
    s = n.RE_RANGE.sub(n.replace_range, s)
    s = n.RE_INTEGER.sub(n.replace_negative_num, s)
    s = n.RE_DECIMAL_NUM.sub(n.replace_number, s)
    s = n.RE_POSITIVE_QUANTIFIERS.sub(n.replace_positive_quantifier, s)
    s = n.RE_DEFAULT_NUM.sub(n.replace_default_num, s)
    s = n.RE_NUMBER.sub(n.replace_number, s)
    return _post_replace(s)


def _map_punctuation(text: str, table: dict[str, str], keep_latin: bool = False) -> str:
    text = re.sub("|".join(re.escape(k) for k in table), lambda m: table[m.group()], text)
    latin = "A-Za-z" if keep_latin else ""
    return re.sub(rf"[^\u4e00-\u9fa5{latin}{_PUNCT_CLASS}]+", "", text)


def collapse_punctuation(text: str) -> str:
    """'。。！！' → '.': a run of phone-table marks keeps its first mark."""
    return re.sub(rf"([{_PUNCT_CLASS}])([{_PUNCT_CLASS}])+", r"\1", text)


def normalize_zh(text: str) -> str:
    """Mandarin normalised text (upstream ``chinese2.text_normalize``)."""
    text = text.replace("嗯", "恩").replace("呣", "母")  # pypinyin gives no initial/final for these
    out = "".join(
        _map_punctuation(normalize_sentence(s).replace("嗯", "恩").replace("呣", "母"), ZH_PUNCT_MAP)
        for s in split_sentences(text)
    )
    return collapse_punctuation(out)


def normalize_yue(text: str) -> str:
    """Cantonese normalised text (upstream ``cantonese.text_normalize``: no collapsing of repeated marks)."""
    return "".join(_map_punctuation(normalize_sentence(s), YUE_PUNCT_MAP) for s in split_sentences(text))
