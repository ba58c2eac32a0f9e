"""`gsv prepare`'s text stage with the real text frontend (en, zh) and a tiny random BERT for zh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gsvkit.data.manifest import read_manifest
from gsvkit.data.prepare import prepare
from gsvkit.data.prepare_config import PrepareConfig


def tone(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def tiny_bert(path: Path, chars: str) -> None:
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", *sorted(set(chars))]
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64
    )
    BertForMaskedLM(config).save_pretrained(path)


@pytest.mark.slow
def test_real_frontend_and_bert(tmp_path):
    from safetensors.torch import load_file

    from gsvkit.text import TextFrontend

    inp = tmp_path / "in"
    inp.mkdir()
    rows = {"en1": ("en", "Hello there, 12.5% done!"), "zh1": ("zh", "你好，世界。"), "zh2": ("zh", "世界你好")}
    for name in rows:
        sf.write(inp / f"{name}.wav", tone(1.5), 16000)
    listing = tmp_path / "t.csv"
    listing.write_text(
        "path,text,lang\n" + "".join(f'in/{n}.wav,"{t}",{lang}\n' for n, (lang, t) in rows.items()), encoding="utf-8"
    )
    tiny_bert(tmp_path / "bert", "你好世界")
    cfg = PrepareConfig(
        inputs=[str(inp)], transcripts=[str(listing)], out=str(tmp_path / "ds"), bert=str(tmp_path / "bert"),
        allow_synthetic=True,  # pure test tones can score as watermarked; this test is about text
    )
    result = prepare(cfg)
    items = {u.id: u for u in read_manifest(tmp_path / "ds")}
    assert set(items) == set(rows), result.report.dropped
    fe = TextFrontend("v2")
    for name, (lang, text) in rows.items():
        expected = fe.clean(text.replace("%", "-"), lang)
        u = items[name]
        assert u.phones == expected.phones and u.phone_ids == expected.phone_ids and u.norm_text == expected.norm_text
        bert = u.feature_path(tmp_path / "ds", "bert")
        if lang == "zh":
            assert u.word2ph is not None and sum(u.word2ph) == len(u.phones)
            assert load_file(str(bert))["bert"].shape == (32, len(u.phones))
        else:
            assert not bert.exists()
    assert "twelve point five-" in items["en1"].norm_text  # upstream's dataset-preparation % rule
    again = prepare(cfg)
    assert dict(again.report.computed) == {}
