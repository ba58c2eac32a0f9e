"""Text on its way into s1: split into fragments, then phones and BERT features per fragment.

Upstream's inference preprocessing (`TTS_infer_pack/TextPreprocessor.py`), over gsvkit's text front end:
- the prompt text gets end punctuation when it has none ("." for English, "。" otherwise);
- the target text is cut with one of cut0-cut5, short pieces are merged, pieces that are only symbols dropped,
  each piece ends in punctuation (`gsvkit.text.split`);
- a piece with fewer than 6 phones is re-read with a leading "." (s1 handles very short inputs badly);
- BERT features exist for Chinese only; every other language gets zeros (`zeros_bert`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gsvkit.errors import TextError

# End punctuation upstream recognises (`text_segmentation_method.splits`).
SPLITS = frozenset("，。？！,.?!~:：—…")


@dataclass(frozen=True)
class TextFeatures:
    text: str  # the piece as read (after punctuation fixes)
    norm_text: str
    phone_ids: list[int]
    bert: torch.Tensor  # [bert_dim, n_phones] float32

    @property
    def n_phones(self) -> int:
        return len(self.phone_ids)


def with_end_punctuation(text: str, lang: str) -> str:
    text = text.strip("\n").strip()
    if text and text[-1] not in SPLITS:
        text += "." if lang == "en" else "。"
    return text


def split_fragments(text: str, lang: str, method: str) -> list[str]:
    """The pieces s1 reads one at a time (upstream `pre_seg_text`; empty list: nothing to say)."""
    from gsvkit.text.split import split_text

    return [p for p in split_text(text, method, lang) if p.strip()]


class BertRequired(TextError):
    """Chinese text without the Chinese BERT model: never skipped like a piece of symbols, always reported."""


class TextReader:
    """Phones and BERT features of text in one model version's symbol table. Safe to share between threads."""

    def __init__(self, version: str, bert: Any | None = None) -> None:
        from gsvkit.text import TextFrontend

        self.version = version
        self.frontend = TextFrontend(version=version)
        self.bert = bert  # BertFeaturizer or None

    def features(self, text: str, lang: str) -> TextFeatures:
        """Phones + BERT of one piece; `TextError` when nothing in it can be pronounced.

        The front end segments mixed-language text and retries with a leading "." under 6 phones.
        """
        segments = self.frontend.process_segments(text, lang)
        ids = [i for seg in segments for i in seg.phone_ids]
        if not ids:
            raise TextError(f"nothing pronounceable in {text!r} (language {lang})")
        bert = torch.cat([self._bert(seg, len(seg.phone_ids)) for seg in segments], dim=1)  # [1024, n_phones]
        norm = "".join(seg.norm_text for seg in segments)
        return TextFeatures(text=text, norm_text=norm, phone_ids=ids, bert=bert.float())

    def _bert(self, seg: Any, n: int) -> torch.Tensor:
        from gsvkit.text.bert import zeros_bert

        lang = str(getattr(seg, "language", "")).replace("all_", "")
        if lang == "zh" and n:
            if self.bert is None:
                raise BertRequired(
                    f"Chinese needs --bert DIR (the chinese-roberta-wwm-ext-large model) to speak "
                    f"{seg.norm_text[:40]!r}: pass bert=DIR (CLI: --bert DIR, or `gsv models fetch bert` once) or "
                    "record it in the voice"
                )
            return self.bert(seg.norm_text, list(seg.word2ph)).float().cpu()
        return zeros_bert(n).float()
