"""Frontend API, bad input, the deliberate English fixes and BERT features (tiny local model)."""

from __future__ import annotations

import pytest
import torch

from gsvkit.errors import TextError
from gsvkit.text import TextFrontend, clean_text, clean_text_for_dataset, get_phones, split_text
from gsvkit.text.bert import BertFeaturizer, features_for_segments, zeros_bert


def test_frontend_process_and_segments():
    fe = TextFrontend(version="v2")
    r = fe.process("今天天气很好。", "zh")
    assert r.norm_text == "今天天气很好." and sum(r.word2ph) == len(r.phones) == len(r.phone_ids)
    parts = fe.process_segments("我爱AI和GPU。", "zh")
    assert [p.language for p in parts] == ["zh", "en", "zh", "en"]
    ids, norm = get_phones("Hi", "en")
    assert norm == ". Hi" and len(ids) == 4  # retried once on ". Hi" (still short: upstream keeps it)


def test_v1_table_and_languages():
    # upstream's v1 Mandarin module has no erhua step: 儿 keeps its own dictionary tone
    assert clean_text("小院儿", "zh", "v1")[0][-1] == "er5"
    assert clean_text("小院儿", "zh", "v2")[0][-1] == "er4"
    phones, _, _ = clean_text("你好", "zh", "v1")
    assert TextFrontend("v1").clean("你好", "zh").phone_ids
    with pytest.raises(TextError, match="zh, ja, en"):
        clean_text("안녕", "ko", "v1")
    assert phones


@pytest.mark.parametrize(
    "text,lang,expected",
    [
        ("See Dr. Smith at 3:30 pm.", "en", "See Doctor Smith at three thirty p.m."),
        ("It was -5°C.", "en", "It was negative five degrees celsius."),
        (
            "In the 1990s: 1,250 people; €20.",
            "en",
            "In the nineteen nineties, one thousand, two hundred fifty people, twenty euros.",
        ),
    ],
)
def test_english_fixes(text, lang, expected):
    assert clean_text(text, lang)[2] == expected
    assert clean_text(text, lang, fix_mistakes=False)[2] != expected


def test_dataset_variant_replaces_percent_and_yuan():
    assert clean_text_for_dataset("增长12.5%", "zh")[2] == "增长十二点五减"
    phones, _, _ = clean_text("价格是￥99", "zh")
    assert "SP2" in phones
    assert "SP2" not in clean_text_for_dataset("价格是￥99", "zh")[0]


@pytest.mark.parametrize("text", ["", "😀😀", "。。。", "ｆｕｌｌ　ｗｉｄｔｈ", "e\u0301te\u0301", "Ω≈∑ 🚀"])
@pytest.mark.parametrize("lang", ["zh", "en", "ja", "yue"])
def test_bad_input_never_crashes_deep(text, lang):
    try:
        phones, word2ph, norm = clean_text(text, lang)
    except TextError:
        return
    assert isinstance(phones, list) and isinstance(norm, str)


def test_wrong_codes_are_clear_errors():
    with pytest.raises(TextError, match="auto, auto_yue"):
        get_phones("hello", "french")
    with pytest.raises(TextError, match="zh, ja, en, ko, yue"):
        clean_text("hello", "fr")
    for mode in ("auto", "zh", "all_ja"):
        with pytest.raises(TextError, match="blank"):
            get_phones("  \n ", mode)  # upstream: IndexError inside split_lang
    with pytest.raises(TextError, match="cut0"):
        split_text("你好。", "cut9")
    assert clean_text("hello", "fr", strict=False)[0] == [","]  # upstream's silent fallback


def test_long_text_is_linear_enough():
    pieces = split_text("今天天气很好，我们去公园散步吧。" * 400, "cut5", "zh")
    assert len(pieces) == 800


def _tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "你", "好", "吗", ",", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab), "utf-8")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(tmp_path)
    return tmp_path


def test_bert_features_repeat_hidden_states_minus_3(tmp_path):
    path = _tiny_bert(tmp_path)
    feat = BertFeaturizer(path)
    feats = feat("你好吗.", [2, 2, 2, 1])
    assert feats.shape == (16, 7)
    hidden = feat.model(**feat.tokenizer("你好吗.", return_tensors="pt"), output_hidden_states=True).hidden_states
    assert torch.allclose(feats[:, 0], hidden[-3][0, 1]) and torch.allclose(feats[:, 1], hidden[-3][0, 1])
    assert torch.allclose(feats[:, 6], hidden[-3][0, 4])
    with pytest.raises(TextError):
        feat("你好", [2])
    assert zeros_bert(5).shape == (1024, 5) and not zeros_bert(5).any()
    segs = TextFrontend().process_segments("你好吗。OK", "zh")
    both = features_for_segments(segs, feat)
    assert both.shape == (16, sum(len(s.phones) for s in segs))
    assert not both[:, -len(segs[-1].phones) :].any() and both[:, 0].any()  # English part: zeros


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, gsvkit.text; heavy = ('jieba', 'pypinyin', 'nltk', 'pyopenjtalk', 'g2pk2', 'split_lang', "
        "'inflect', 'torch'); print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_text_prints_phones():
    from typer.testing import CliRunner

    from gsvkit.cli import app

    res = CliRunner().invoke(app, ["text", "你好，Hello。", "--lang", "zh", "--json"])
    assert res.exit_code == 0, res.output
    assert '"language": "en"' in res.output and '"norm_text": "你好,"' in res.output
    bad = CliRunner().invoke(app, ["text", "hi", "--lang", "klingon"])
    assert bad.exit_code == 2


def test_jieba_cache_folder_follows_gsvkit_cache_dir(tmp_path, monkeypatch):
    from gsvkit.text.g2p.zh import _Jieba

    monkeypatch.setenv("GSVKIT_CACHE_DIR", str(tmp_path))
    seg = _Jieba()
    assert seg.tok.tmp_dir == str(tmp_path)
    assert any(tmp_path.glob("jieba*.cache"))  # its dictionary cache was written there


def test_english_dictionary_shares_one_string_per_phone():
    from gsvkit.text.g2p.en import load_dictionary

    table = load_dictionary()
    assert table["hello"] == ["HH", "AH0", "L", "OW1"] and table["world"] == ["W", "ER1", "L", "D"]
    distinct = {id(p) for pron in table.values() for p in pron}
    assert len(distinct) == len({p for pron in table.values() for p in pron}) < 100  # one object per phone
