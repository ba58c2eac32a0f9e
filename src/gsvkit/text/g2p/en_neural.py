"""g2p_en's neural grapheme-to-phoneme model (a GRU encoder-decoder), run in numpy from the package's own files.

``import g2p_en`` downloads NLTK data at import time, so its ``__init__`` is never imported: the weights
(``checkpoint20.npz``) and the homograph table (``homographs.en``) are read from the installed distribution's
directory, found without executing it. Greedy decoding, at most 20 phones, exactly as g2p_en's ``predict``.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from gsvkit.errors import TextError

GRAPHEMES = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
PHONEMES = ["<pad>", "<unk>", "<s>", "</s>"] + (
    "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH EH0 EH1 EH2 ER0 ER1 ER2 EY0 "
    "EY1 EY2 F G HH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG OW0 OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 UH1 UH2 UW UW0 "
    "UW1 UW2 V W Y Z ZH"
).split()
_G2IDX = {g: i for i, g in enumerate(GRAPHEMES)}


def g2p_en_dir() -> Path:
    """Directory of the installed g2p_en package, located without importing it."""
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        raise TextError("English needs the g2p_en package for its bundled model files: pip install 'gsvkit[text]'")
    return Path(next(iter(spec.submodule_search_locations)))


def load_homographs() -> dict[str, tuple[list[str], list[str], str]]:
    """g2p_en's homograph table: word → (pronunciation for POS, other pronunciation, POS prefix)."""
    table = {}
    for line in (g2p_en_dir() / "homographs.en").read_text("utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        word, pron1, pron2, pos = line.strip().split("|")
        table[word.lower()] = (pron1.split(), pron2.split(), pos)
    return table


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


class NeuralG2P:
    """Predict ARPAbet phones of an out-of-vocabulary word."""

    def __init__(self, weights_path: Path | None = None) -> None:
        path = weights_path or g2p_en_dir() / "checkpoint20.npz"
        with np.load(path) as w:  # plain arrays, no pickle
            self.w = {k: w[k] for k in w.files}

    @staticmethod
    def _cell(x, h, w_ih, w_hh, b_ih, b_hh):  # x [1, E], h [1, H]
        gi = x @ w_ih.T + b_ih  # [1, 3H] (reset, update, new)
        gh = h @ w_hh.T + b_hh
        k = gi.shape[-1] * 2 // 3
        r, z = np.split(_sigmoid(gi[:, :k] + gh[:, :k]), 2, -1)
        n = np.tanh(gi[:, k:] + r * gh[:, k:])
        return (1 - z) * n + z * h

    def predict(self, word: str) -> list[str]:
        w = self.w
        ids = [_G2IDX.get(c, _G2IDX["<unk>"]) for c in list(word) + ["</s>"]]
        x = np.take(w["enc_emb"], np.expand_dims(ids, 0), axis=0)  # [1, T, E]
        h = np.zeros((1, w["enc_w_hh"].shape[-1]), np.float32)
        for t in range(len(ids)):
            h = self._cell(x[:, t, :], h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
        dec = np.take(w["dec_emb"], [2], axis=0)  # <s>
        preds: list[int] = []
        for _ in range(20):
            h = self._cell(dec, h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            pred = int((h @ w["fc_w"].T + w["fc_b"]).argmax())
            if pred == 3:  # </s>
                break
            preds.append(pred)
            dec = np.take(w["dec_emb"], [pred], axis=0)
        return [PHONEMES[i] if i < len(PHONEMES) else "<unk>" for i in preds]


@lru_cache(maxsize=1)
def default_model() -> NeuralG2P:
    return NeuralG2P()
