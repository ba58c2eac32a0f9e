"""Cantonese G2P as upstream: ToJyutping syllables → initial + toned final, prefixed "Y" (the v2 table's
Cantonese phones). word2ph counts phones per character like zh."""

from __future__ import annotations

import re

from gsvkit.errors import TextError

PUNCTUATION = ("!", "?", "…", ",", ".", "-")
_PUNCT_SET = frozenset(PUNCTUATION)
_PUNCT_RUN = re.compile(r"^[{}]+$".format(re.escape("".join(PUNCTUATION))))
_PUNCT_SPLIT = re.compile(r"([{}])".format(re.escape("".join(PUNCTUATION))))
INITIALS = (
    "aa aai aak aap aat aau ai au ap at ak a p b e ts t dz d kw k gw g f h l m ng n s y w c z j ong on ou oi ok o uk "
    "ung sp spl spn sil"
).split()


def _jyutping(text: str) -> list[str]:
    try:
        import ToJyutping
    except ImportError as e:
        raise TextError("Cantonese needs ToJyutping: pip install ToJyutping") from e
    out: list[str] = []
    for word, syllable in ToJyutping.get_jyutping_list(text):
        if _PUNCT_RUN.match(word):
            out += [p for p in _PUNCT_SPLIT.split(word) if p]
        else:
            if not syllable or not re.search(r"^([a-z]+[1-6]+[ ]?)+$", syllable):
                raise TextError(f"no Cantonese reading for {word!r}; remove or rewrite it")
            out.append(syllable)
    return out


def g2p_yue(norm_text: str) -> tuple[list[str], list[int]]:
    parts: list[tuple[str, int]] = []  # (initial or final, tone); tone -1 for initials, 0 for marks
    word2ph: list[int] = []
    for syl in _jyutping(norm_text):
        if syl in PUNCTUATION or syl == "_":
            parts.append((syl, 0))
            word2ph.append(1)
            continue
        try:
            tone, bare = int(syl[-1]), syl[:-1]
        except ValueError:
            tone, bare = 0, syl
        for initial in INITIALS:
            if bare.startswith(initial):
                if bare.startswith("nga"):
                    parts += [(bare[:2], -1), (bare[2:] or bare[-1], tone)]
                else:
                    parts += [(initial, -1), (bare[len(initial) :] or initial[-1], tone)]
                word2ph.append(2)
                break
    phones = []
    for p, tone in parts:
        ph = f"{p}{tone}" if tone not in (-1, 0) else p
        phones.append(ph if ph in _PUNCT_SET else "Y" + ph)
    return phones, word2ph
