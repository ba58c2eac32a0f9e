"""Text frontend: text → normalised text → phones → phone ids (+ word2ph, BERT features for zh).

Matches upstream GPT-SoVITS's v1/v2 frontend (the phone ids the official models were trained on), offline.
Heavy libraries (jieba, pypinyin, pyopenjtalk, g2pk2, nltk) load on first use, never at import.

    from gsvkit.text import TextFrontend, clean_text, get_phones, split_text
"""

from __future__ import annotations

from gsvkit.text.cleaner import LANGUAGES, clean_text, clean_text_for_dataset
from gsvkit.text.frontend import MODES, TextFrontend, TextResult, get_phones, process_segments
from gsvkit.text.split import preprocess_for_inference, split_text
from gsvkit.text.symbols import phones_to_ids, symbols

__all__ = [
    "LANGUAGES",
    "MODES",
    "TextFrontend",
    "TextResult",
    "clean_text",
    "clean_text_for_dataset",
    "get_phones",
    "phones_to_ids",
    "preprocess_for_inference",
    "process_segments",
    "split_text",
    "symbols",
]
