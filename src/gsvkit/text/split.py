"""Text splitting for synthesis: upstream's cut0…cut5 and the inference-side preprocessing (``pre_seg_text``).

``split_text(text, method, language)`` returns exactly the pieces upstream's TTS_infer_pack feeds to the
frontend: marks collapsed, a "。" prefix when the first clause is under 4 characters, the cut method, short
pieces merged to at least 5 characters, pieces without a word character dropped, an end mark appended, and
pieces over 510 characters split again. ``split_text_webui`` is the (slightly different) glue of upstream's web UI.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gsvkit.errors import TextError

SPLITS = frozenset("，。？！,.?!~:：—…")
_MARKS = frozenset(["!", "?", "…", ",", ".", "-", " "])
_CUT5_MARKS = frozenset(",.;?!、，。？！;：…")
_COLLAPSE = re.compile("([{0}])([{0}])+".format("".join(re.escape(p) for p in "!?…,.-")))
METHODS: dict[str, Callable[[str], str]] = {}


def _register(name: str):
    def deco(fn):
        METHODS[name] = fn
        return fn

    return deco


def _only_marks(piece: str, marks=_MARKS) -> bool:
    return set(piece).issubset(marks)


def split_sentences(text: str) -> list[str]:
    """Cut after every split mark (upstream ``split``); "……" → "。", "——" → "，", an end mark is ensured."""
    text = text.replace("……", "。").replace("——", "，")
    if text[-1] not in SPLITS:
        text += "。"
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch in SPLITS:
            out.append(text[start : i + 1])
            start = i + 1
    return out


@_register("cut0")
def cut0(text: str) -> str:
    """No split (all-mark input gives upstream's literal "/n")."""
    return text if not _only_marks(text) else "/n"


@_register("cut1")
def cut1(text: str) -> str:
    """Every four sentences."""
    text = text.strip("\n")
    sents = split_sentences(text)
    idx: list[int | None] = list(range(0, len(sents), 4))
    idx[-1] = None
    opts = ["".join(sents[idx[i] : idx[i + 1]]) for i in range(len(idx) - 1)] if len(idx) > 1 else [text]
    return "\n".join(o for o in opts if not _only_marks(o))


@_register("cut2")
def cut2(text: str) -> str:
    """Pieces of more than 50 characters (a short tail joins the previous piece)."""
    text = text.strip("\n")
    sents = split_sentences(text)
    if len(sents) < 2:
        return text
    opts, total, cur = [], 0, ""
    for s in sents:
        total += len(s)
        cur += s
        if total > 50:
            opts.append(cur)
            total, cur = 0, ""
    if cur:
        opts.append(cur)
    if len(opts) > 1 and len(opts[-1]) < 50:
        opts[-2] += opts[-1]
        opts = opts[:-1]
    return "\n".join(o for o in opts if not _only_marks(o))


@_register("cut3")
def cut3(text: str) -> str:
    """At every "。"."""
    text = text.strip("\n")
    return "\n".join(o for o in text.strip("。").split("。") if not _only_marks(o))


@_register("cut4")
def cut4(text: str) -> str:
    """At every "." that is not a decimal point."""
    text = text.strip("\n")
    return "\n".join(o for o in re.split(r"(?<!\d)\.(?!\d)", text.strip(".")) if not _only_marks(o))


@_register("cut5")
def cut5(text: str) -> str:
    """After every punctuation mark (decimal points excepted)."""
    text = text.strip("\n")
    pieces, cur = [], []
    for i, ch in enumerate(text):
        cur.append(ch)
        if ch in _CUT5_MARKS and not (
            ch == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()
        ):
            pieces.append("".join(cur))
            cur = []
    if cur:
        pieces.append("".join(cur))
    return "\n".join(p for p in pieces if not _only_marks(p, _CUT5_MARKS))


def cut(text: str, method: str = "cut5") -> str:
    """Apply one cut method; pieces are separated by "\\n"."""
    if method not in METHODS:
        raise TextError(f"unknown split method {method!r}; use one of {', '.join(METHODS)}")
    return METHODS[method](text)


def collapse_marks(text: str) -> str:
    """A run of !?…,.- keeps its first mark (upstream ``replace_consecutive_punctuation``)."""
    return _COLLAPSE.sub(r"\1", text)


def first_clause(text: str) -> str:
    return re.split("[" + "".join(re.escape(s) for s in SPLITS) + "]", text)[0].strip()


def merge_short(pieces: list[str], threshold: int = 5) -> list[str]:
    """Join consecutive pieces until each has at least ``threshold`` characters (a short tail joins the last)."""
    if len(pieces) < 2:
        return pieces
    out, cur = [], ""
    for p in pieces:
        cur += p
        if len(cur) >= threshold:
            out.append(cur)
            cur = ""
    if cur:
        if out:
            out[-1] += cur
        else:
            out.append(cur)
    return out


def split_big_text(text: str, max_len: int = 510) -> list[str]:
    """Split a piece longer than ``max_len`` at marks (BERT's input limit)."""
    out, cur = [], ""
    for seg in re.split("([" + "".join(SPLITS) + "])", text):
        if len(cur + seg) > max_len:
            out.append(cur)
            cur = seg
        else:
            cur += seg
    if cur:
        out.append(cur)
    return out


def _filter(pieces: list[str]) -> list[str]:
    if all(p in (None, " ", "\n", "") for p in pieces):
        raise TextError("no text to synthesise: the text is empty or only blanks")
    return [p for p in pieces if p not in (None, " ", "")]


def split_text(text: str, method: str = "cut5", language: str = "zh", *, collapse: bool = True) -> list[str]:
    """The inference-side preprocessing: the pieces upstream synthesises one by one.

    Args:
        text: the whole text to speak.
        method: cut0 (none), cut1 (4 sentences), cut2 (50 characters), cut3 (。), cut4 (.), cut5 (every mark).
        language: the text's language mode; "en" uses "." where other languages use "。".
        collapse: collapse runs of marks first (TTS_infer_pack does; the web UI does not).
    """
    if method not in METHODS:
        raise TextError(f"unknown split method {method!r}; use one of {', '.join(METHODS)}")
    end = "." if language == "en" else "。"
    if collapse:
        text = collapse_marks(text)
    text = text.strip("\n")
    if not text:
        return []
    if text[0] not in SPLITS and len(first_clause(text)) < 4:
        text = end + text
    text = cut(text, method)
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    out: list[str] = []
    for piece in merge_short(_filter(text.split("\n")), 5):
        if not piece.strip() or not re.sub(r"\W+", "", piece):
            continue
        if piece[-1] not in SPLITS:
            piece += end
        out.extend(split_big_text(piece) if len(piece) > 510 else [piece])
    return out


def split_text_webui(text: str, method: str = "cut1", language: str = "zh") -> list[str]:
    """Upstream web UI's splitting: no mark collapsing, no "。" prefix, no \\W filter, no 510 split."""
    end = "." if language == "en" else "。"
    text = text.strip("\n")
    if method != "cut0":
        text = cut(text, method)
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    out = []
    for piece in merge_short(_filter(text.split("\n")), 5):
        if len(piece.strip()) == 0:
            continue
        out.append(piece if piece[-1] in SPLITS else piece + end)
    return out


def preprocess_for_inference(text: str, language: str = "auto", method: str = "cut5", version: str = "v2", **kw):
    """Split ``text`` and run the frontend on each piece: [(TextResult over the piece)] like upstream's preprocess.

    Pieces whose normalised text is empty are skipped (upstream does the same).
    """
    from gsvkit.text.frontend import TextFrontend

    fe = TextFrontend(version, **kw)
    out = []
    for piece in split_text(text, method, language):
        result = fe.process(piece, language)
        if result.norm_text:
            out.append(result)
    return out
