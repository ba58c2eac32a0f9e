"""``clean_text``: one language's text → (phones, word2ph, normalised text), as upstream's ``text.cleaner``.

Special cases kept for parity with the official models: phones off the table become "UNK"; English with fewer
than 4 phones gets a leading ","; Mandarin text containing ``￥`` (or ``^``) takes the "special" path where every
"," phone becomes ``SP2`` (``SP3``); an unknown language code is upstream's fallback (English on " ") only with
``strict=False``, otherwise a TextError that lists the valid codes.
"""

from __future__ import annotations

import unicodedata

from gsvkit.errors import TextError
from gsvkit.text.symbols import UNK, _check_version, symbol_set

LANGUAGES = ("zh", "ja", "en", "ko", "yue")
V1_LANGUAGES = ("zh", "ja", "en")
_SPECIAL = (("￥", "zh", "SP2"), ("^", "zh", "SP3"))


def normalize_text(text: str, language: str, fix_mistakes: bool = True) -> str:
    """The normalised text of one language (what clean_text returns as norm_text)."""
    if language == "zh":
        from gsvkit.text.normalize.zh import normalize_zh

        return normalize_zh(text)
    if language == "yue":
        from gsvkit.text.normalize.zh import normalize_yue

        return normalize_yue(text)
    if language == "en":
        from gsvkit.text.normalize.en import normalize_en

        return normalize_en(text, fix_mistakes=fix_mistakes)
    if language == "ja":
        from gsvkit.text.g2p.ja import normalize_ja

        return normalize_ja(text)
    return text


def _g2p(norm_text: str, language: str, polyphone_fix: bool, version: str = "v2") -> tuple[list[str], list[int] | None]:
    if language == "zh":
        from gsvkit.text.g2p.zh import g2p_zh

        # upstream's v1 Mandarin module is the v2 one without erhua
        return g2p_zh(norm_text, polyphone_fix=polyphone_fix, erhua=_check_version(version) == "v2")
    if language == "yue":
        from gsvkit.text.g2p.yue import g2p_yue

        return g2p_yue(norm_text)
    if language == "en":
        from gsvkit.text.g2p.en import g2p_en

        phones = g2p_en(norm_text)
        return ([","] + phones if len(phones) < 4 else phones), None
    if language == "ja":
        from gsvkit.text.g2p.ja import g2p_ja

        return g2p_ja(norm_text), None
    from gsvkit.text.g2p.ko import g2p_ko

    return g2p_ko(norm_text), None


def check_language(language: str, version: str = "v2", strict: bool = True) -> str:
    allowed = V1_LANGUAGES if _check_version(version) == "v1" else LANGUAGES
    if language in allowed:
        return language
    if strict:
        raise TextError(f"unknown language {language!r} for {version}; use one of {', '.join(allowed)}")
    return ""


def clean_text(
    text: str,
    language: str,
    version: str = "v2",
    *,
    fix_mistakes: bool = True,
    polyphone_fix: bool = False,
    strict: bool = True,
) -> tuple[list[str], list[int] | None, str]:
    """Phones, word2ph (zh/yue only, phones per character of norm_text) and normalised text of one language.

    Args:
        text: raw text of one language (NFC-normalised here; full-width forms are handled per language).
        language: zh, ja, en, ko or yue (v1: zh, ja, en).
        version: symbol table the phones must belong to ("v1" or "v2").
        fix_mistakes: apply gsvkit's fixes of upstream's English normalisation mistakes (see normalize/en.py).
        polyphone_fix: correct zh polyphones with upstream's word dictionary (closer to g2pW-trained models).
        strict: raise on an unknown language instead of upstream's silent fallback.
    """
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text)
    if not check_language(language, version, strict):
        language, text = "en", " "  # upstream's fallback for an unknown language
    table = symbol_set(version)
    for mark, lang, target in _SPECIAL:
        if mark in text and language == lang:
            return _clean_special(text.replace(mark, ","), language, target, version, polyphone_fix)
    norm_text = normalize_text(text, language, fix_mistakes)
    phones, word2ph = _g2p(norm_text, language, polyphone_fix, version)
    if word2ph is not None and (len(phones) != sum(word2ph) or len(norm_text) != len(word2ph)):
        raise TextError(f"could not align phones with the characters of {norm_text!r}; please report this text")
    return [p if p in table else UNK for p in phones], word2ph, norm_text


def _clean_special(text, language, target, version, polyphone_fix):
    # every "," (not only the one from the mark) becomes the pause symbol; upstream skips the UNK mapping here
    norm_text = normalize_text(text, language)
    phones, word2ph = _g2p(norm_text, language, polyphone_fix, version)
    return [target if p == "," else p for p in phones], word2ph, norm_text


def clean_text_for_dataset(text: str, language: str, version: str = "v2", **kw):
    """The dataset-preparation variant (upstream ``1-get-text.py``): ``%`` → "-" and ``￥`` → "," first.

    Training transcripts therefore never take the ``SP2`` path, and 12.5% becomes 十二点五减, as the official
    models' training data had it. Use ``clean_text`` for inference.
    """
    return clean_text(text.replace("%", "-").replace("￥", ","), language, version, **kw)
