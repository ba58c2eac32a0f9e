"""Japanese G2P: pyopenjtalk-plus (ships its own dictionary) with upstream's prosody marks.

As upstream: text lower-cased, split on non-Japanese characters (kept as their own tokens, spaces dropped),
each Japanese run → phones with accent marks ``[`` (rise), ``]`` (fall) and ``#`` (accent-phrase boundary; not in
the v2 table, so clean_text turns it into UNK, which the official models were trained with).
"""

from __future__ import annotations

import re
import threading

from gsvkit.errors import TextError
from gsvkit.text.punctuation import CJK_MARKS

_JA_CHARS = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_JAPANESE = re.compile(f"[{_JA_CHARS}]")
_MARKS = re.compile(f"[^{_JA_CHARS}]")
_MARK_MAP = CJK_MARKS
_PUNCT_CLASS = "".join(re.escape(p) for p in ("!", "?", "…", ",", ".", "-"))
_lock = threading.Lock()  # OpenJTalk's global instance is not thread-safe


def _openjtalk():
    try:
        import pyopenjtalk
    except ImportError as e:
        raise TextError("Japanese needs pyopenjtalk-plus: pip install 'gsvkit[text]'") from e
    return pyopenjtalk


def normalize_ja(text: str) -> str:
    """Only runs of the phone-table marks are collapsed (so 。。。 stays)."""
    return re.sub(rf"([{_PUNCT_CLASS}])([{_PUNCT_CLASS}])+", r"\1", text)


def _feature(regex: str, label: str) -> int:
    m = re.search(regex, label)
    return -50 if m is None else int(m.group(1))


def prosody_phones(text: str) -> list[str]:
    """Phones + prosody marks of a Japanese run (ESPnet's ``pyopenjtalk_g2p_prosody``), including ^ and $/?."""
    pyopenjtalk = _openjtalk()
    with _lock:
        labels = pyopenjtalk.make_label(pyopenjtalk.run_frontend(text))
    out: list[str] = []
    for n, lab in enumerate(labels):
        found = re.search(r"\-(.*?)\+", lab)
        assert found is not None  # every full-context label has a -p3+ part
        p3 = found.group(1)
        if p3 in "AEIOU":  # unvoiced vowels are read as vowels
            p3 = p3.lower()
        if p3 == "sil":
            if n == 0:
                out.append("^")
            elif n == len(labels) - 1:
                e3 = _feature(r"!(\d+)_", lab)
                if e3 == 0:
                    out.append("$")
                elif e3 == 1:
                    out.append("?")
            continue
        if p3 == "pau":
            out.append("_")
            continue
        out.append(p3)
        a1 = _feature(r"/A:([0-9\-]+)\+", lab)
        a2 = _feature(r"\+(\d+)\+", lab)
        a3 = _feature(r"\+(\d+)/", lab)
        f1 = _feature(r"/F:(\d+)_", lab)
        a2_next = _feature(r"\+(\d+)\+", labels[n + 1])
        if a3 == 1 and a2_next == 1 and p3 in "aeiouAEIOUNcl":
            out.append("#")
        elif a1 == 0 and a2_next == a2 + 1 and a2 != f1:
            out.append("]")
        elif a2 == 1 and a2_next == 2:
            out.append("[")
    return out


def g2p_ja(norm_text: str) -> list[str]:
    """Phones of Japanese text (marks mapped to the table's punctuation; other unknowns left for UNK)."""
    text = norm_text.replace("％", "パーセント").lower()
    runs = _MARKS.split(text)
    marks = _MARKS.findall(text)
    phones: list[str] = []
    for i, run in enumerate(runs):
        if _JAPANESE.match(run):
            phones += prosody_phones(run)[1:-1]
        if i < len(marks) and marks[i] != " ":
            phones.append(marks[i].replace(" ", ""))
    return [_MARK_MAP.get(p, p) for p in phones]
