"""Korean G2P as upstream: Latin letters spelled in Hangul, g2pk2 pronunciation rules, jamo decomposition.

Each jamo is a phone; a space becomes 空 and any other symbol off the table becomes 停 (not UNK), which is what
the official v2 models were trained with. Needs g2pk2 (with python-mecab-ko and its bundled dictionary).
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from pathlib import Path

from gsvkit.errors import TextError
from gsvkit.text.punctuation import CJK_MARKS

_LATIN = [
    (re.compile(c, re.IGNORECASE), h)
    for c, h in zip(
        "abcdefghijklmnopqrstuvwxyz",
        (
            "에이 비 시 디 이 에프 지 에이치 아이 제이 케이 엘 엠 엔 오 피 큐 아르 "
            "에스 티 유 브이 더블유 엑스 와이 제트"
        ).split(),
        strict=True,
    )
]
_DIVIDE = [
    ("ㅘ", "ㅗㅏ"),
    ("ㅙ", "ㅗㅐ"),
    ("ㅚ", "ㅗㅣ"),
    ("ㅝ", "ㅜㅓ"),
    ("ㅞ", "ㅜㅔ"),
    ("ㅟ", "ㅜㅣ"),
    ("ㅢ", "ㅡㅣ"),
    ("ㅑ", "ㅣㅏ"),
    ("ㅒ", "ㅣㅐ"),
    ("ㅕ", "ㅣㅓ"),
    ("ㅖ", "ㅣㅔ"),
    ("ㅛ", "ㅣㅗ"),
    ("ㅠ", "ㅣㅜ"),
]
_MARK_MAP = {
    **CJK_MARKS,
    " ": "空",
}
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _g2pk():
    """Build g2pk2's converter without its network and pip side effects.

    ``import g2pk2`` calls ``nltk.download('cmudict')`` when NLTK's CMUdict is missing, and ``G2p()`` would
    ``pip install`` python-mecab-ko if absent and load that corpus. Latin letters are spelled in Hangul before
    g2pk2 sees the text, so its English dictionary is never used: it is left empty.
    """
    import importlib.util

    for mod, pkg in (("g2pk2", "g2pk2"), ("mecab", "python-mecab-ko"), ("jamo", "jamo")):
        if importlib.util.find_spec(mod) is None:
            raise TextError(f"Korean needs {pkg}: pip install g2pk2 python-mecab-ko python-mecab-ko-dic jamo")
    from gsvkit.utils.imports import import_whole

    nltk = import_whole("nltk")
    real_download = nltk.download
    nltk.download = lambda *a, **k: False  # never reach the network
    try:
        import g2pk2.g2pk2 as core
    finally:
        nltk.download = real_download
    import mecab

    g2p = object.__new__(core.G2p)
    g2p.use_konlpy, g2p.mecab_path = False, None
    g2p.mecab = mecab.MeCab()
    g2p.table = core.parse_table()
    g2p.cmu = {}
    g2p.rule2text = core.get_rule_id2text()
    g2p.idioms_path = str(Path(core.__file__).with_name("idioms.txt"))
    return g2p


def _fix_g2pk2(text: str) -> str:
    # g2pk2 reads 을/를 + ㄹ… wrongly; upstream re-inserts ㄴ
    out = ""
    i = 0
    while i < len(text) - 4:
        if text[i : i + 3] in ("ㅇㅡㄹ", "ㄹㅡㄹ") and text[i + 3] == " " and text[i + 4] == "ㄹ":
            out += text[i : i + 3] + " " + "ㄴ"
            i += 5
        else:
            out += text[i]
            i += 1
    return out + text[i:]


def g2p_ko(norm_text: str) -> list[str]:
    from jamo import h2j, j2hcj

    from gsvkit.text.symbols import symbol_set

    text = norm_text
    for regex, hangul in _LATIN:
        text = regex.sub(hangul, text)
    with _lock:
        text = _g2pk()(text)
    text = j2hcj(h2j(text))
    for src, dst in _DIVIDE:
        text = text.replace(src, dst)
    text = _fix_g2pk2(text)
    text = re.sub(r"([\u3131-\u3163])$", r"\1.", text)
    table = symbol_set("v2")
    out = []
    for ch in text:
        ch = _MARK_MAP.get(ch, ch)
        out.append(ch if ch in table else "停")
    return out
