"""The inference-side text path: language modes, mixed-language segmentation, the short-text retry.

``get_phones(text, mode)`` is upstream's ``TextPreprocessor.get_phones_and_bert`` without the BERT part:
runs of spaces collapsed, text segmented by language according to ``mode``, each segment cleaned with
``clean_text``, and if the whole gives fewer than 6 phones the call is retried once on ``"." + text``
(the official models were trained on nothing shorter). ``TextFrontend`` wraps it with per-segment results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gsvkit.errors import TextError
from gsvkit.text.cleaner import clean_text
from gsvkit.text.symbols import phones_to_ids

MODES = ("auto", "auto_yue", "zh", "ja", "ko", "yue", "en", "all_zh", "all_ja", "all_ko", "all_yue")
MIN_PHONES = 6


@dataclass(frozen=True)
class TextResult:
    """What the frontend makes of one piece of text."""

    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None
    language: str


def segment_by_mode(text: str, mode: str) -> list[tuple[str, str]]:
    """[(language, text)] that upstream sends to clean_text for ``mode``."""
    from gsvkit.text.langseg import segment

    if mode not in MODES:
        raise TextError(f"unknown language mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "en":
        return [("en", re.sub(" {2,}", " ", text))]
    if mode in ("all_zh", "all_yue", "all_ja", "all_ko"):
        base = mode[4:]
        items = segment(text, "zh" if base == "yue" else base)
        return [("yue" if base == "yue" and it["lang"] == "zh" else it["lang"], it["text"]) for it in items]
    if mode in ("auto", "auto_yue"):
        items = segment(text)
        return [("yue" if mode == "auto_yue" and it["lang"] == "zh" else it["lang"], it["text"]) for it in items]
    # zh/ja/ko/yue: English stays English, every other run takes the mode's language
    langs: list[str] = []
    texts: list[str] = []
    for it in segment(text):
        is_en = it["lang"] == "en"
        if langs and (langs[-1] == "en") == is_en:
            texts[-1] += it["text"]
            continue
        langs.append("en" if is_en else mode)
        texts.append(it["text"])
    return list(zip(langs, texts, strict=True))


def _process_once(text: str, mode: str, version: str, **kw) -> list[TextResult]:
    text = re.sub(r" {2,}", " ", text)
    segments = segment_by_mode(text, mode)
    if not segments:
        raise TextError("text is empty; give at least one pronounceable character")
    out = []
    for lang, seg in segments:
        phones, word2ph, norm = clean_text(seg, lang.replace("all_", ""), version, strict=False, **kw)
        out.append(TextResult(norm, phones, phones_to_ids(phones, version), word2ph, lang))
    return out


def process_segments(text: str, mode: str = "auto", version: str = "v2", **kw) -> list[TextResult]:
    """Per-segment results of the inference path (after the "." retry when the total is under 6 phones)."""
    if not isinstance(text, str) or text == "":
        raise TextError("text is empty; give at least one pronounceable character")
    results = _process_once(text, mode, version, **kw)
    if sum(len(r.phones) for r in results) < MIN_PHONES:
        results = _process_once("." + text, mode, version, **kw)
    return results


def get_phones(text: str, mode: str = "auto", version: str = "v2", **kw) -> tuple[list[int], str]:
    """(phone ids, normalised text) for any language mode: upstream's inference path."""
    results = process_segments(text, mode, version, **kw)
    return [i for r in results for i in r.phone_ids], "".join(r.norm_text for r in results)


class TextFrontend:
    """Text → normalised text, phones, ids and word2ph, for one symbol-table version.

    Example::

        fe = TextFrontend(version="v2")
        r = fe.process("我爱AI。", "auto")      # TextResult over all segments
        parts = fe.process_segments("…", "zh")  # one TextResult per language segment
    """

    def __init__(self, version: str = "v2", *, fix_mistakes: bool = True, polyphone_fix: bool = False) -> None:
        phones_to_ids([], version)  # validates the version
        self.version = version
        self.options = {"fix_mistakes": fix_mistakes, "polyphone_fix": polyphone_fix}

    def process_segments(self, text: str, language: str = "auto") -> list[TextResult]:
        return process_segments(text, language, self.version, **self.options)

    def process(self, text: str, language: str = "auto") -> TextResult:
        """The whole text as one result (word2ph only when it is a single zh/yue segment)."""
        parts = self.process_segments(text, language)
        phones = [p for r in parts for p in r.phones]
        word2ph = parts[0].word2ph if len(parts) == 1 else None
        return TextResult(
            "".join(r.norm_text for r in parts),
            phones,
            [i for r in parts for i in r.phone_ids],
            word2ph,
            language,
        )

    def clean(self, text: str, language: str) -> TextResult:
        """One language, no segmentation and no retry (upstream ``clean_text``)."""
        phones, word2ph, norm = clean_text(text, language, self.version, **self.options)
        return TextResult(norm, phones, phones_to_ids(phones, self.version), word2ph, language)
