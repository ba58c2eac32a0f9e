"""Transcript readers (.list, CSV, TSV, JSONL, sidecars), their problem reports, and the .list writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gsvkit.data.transcripts import (
    normalize_language,
    read_transcripts,
    sidecar_transcript,
    write_list,
)
from gsvkit.errors import DataError


def test_upstream_list(tmp_path):
    (tmp_path / "a.list").write_text(
        "wavs/x.wav|spk|ZH|你好\n\n/abs/y.wav|other|JP|テキスト|with bar\nbad line\nz.wav|s|EN|\n", encoding="utf-8"
    )
    items, problems = read_transcripts(tmp_path / "a.list")
    assert [(t.audio, t.speaker, t.language, t.text) for t in items] == [
        (tmp_path / "wavs" / "x.wav", "spk", "zh", "你好"),
        (Path("/abs/y.wav"), "other", "ja", "テキスト|with bar"),
    ]
    assert items[0].origin.endswith("a.list:1")
    assert [(p.where.rsplit(":", 1)[1], p.reason) for p in problems] == [
        ("4", "expected 4 fields `audio|speaker|LANG|text`"),
        ("5", "empty transcript"),
    ]


def test_csv_tsv_jsonl(tmp_path):
    (tmp_path / "t.csv").write_text('Path,Text,lang\nx.wav,"hello, world",en\ny.wav,second,\n', encoding="utf-8")
    (tmp_path / "t.tsv").write_text("file\ttranscript\tspeaker\nx.wav\thi there\tbob\n", encoding="utf-8")
    (tmp_path / "t.jsonl").write_text(
        json.dumps({"audio": "x.wav", "text": "one", "language": "KO"}) + "\n{broken\n" + json.dumps([1]) + "\n",
        encoding="utf-8",
    )
    csv_items, _ = read_transcripts(tmp_path / "t.csv")
    assert [(t.text, t.language) for t in csv_items] == [("hello, world", "en"), ("second", None)]
    tsv_items, _ = read_transcripts(tmp_path / "t.tsv")
    assert tsv_items[0].speaker == "bob" and tsv_items[0].text == "hi there"
    jsonl_items, problems = read_transcripts(tmp_path / "t.jsonl")
    assert jsonl_items[0].language == "ko"
    assert [p.reason.split(" (")[0] for p in problems] == ["not valid JSON", "not an object"]


def test_csv_without_needed_columns_is_an_error(tmp_path):
    (tmp_path / "t.csv").write_text("name,words\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match="header row must name an audio column"):
        read_transcripts(tmp_path / "t.csv")
    (tmp_path / "t.doc").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unknown transcript format"):
        read_transcripts(tmp_path / "t.doc")
    with pytest.raises(DataError, match="not found"):
        read_transcripts(tmp_path / "none.list")


def test_non_utf8_lines_are_reported_not_fatal(tmp_path):
    data = b"a.wav|s|EN|fine\n" + "b.wav|s|EN|caf\xe9\n".encode("cp1252") + b"c.wav|s|EN|ok\n"
    (tmp_path / "x.list").write_bytes(b"\xef\xbb\xbf" + data)  # with a BOM
    items, problems = read_transcripts(tmp_path / "x.list")
    assert [t.text for t in items] == ["fine", "ok"]
    assert len(problems) == 1 and problems[0].where.endswith("x.list:2") and "UTF-8" in problems[0].reason
    assert problems[0].audio == tmp_path / "b.wav"  # the recording it names can still be set aside


def test_sidecars(tmp_path):
    audio = tmp_path / "clip.wav"
    assert sidecar_transcript(audio) == (None, None)
    (tmp_path / "clip.lab").write_text("first line\n second line \n", encoding="utf-8")
    assert sidecar_transcript(audio) == ("first line second line", None)
    (tmp_path / "clip.txt").write_bytes("caf\xe9".encode("latin-1"))
    text, problem = sidecar_transcript(audio)
    assert text is None and "UTF-8" in problem.reason
    (tmp_path / "clip.txt").write_text("  \n", encoding="utf-8")
    assert sidecar_transcript(audio)[1].reason == "empty transcript"


def test_write_list_round_trip(tmp_path):
    write_list(
        tmp_path / "o.list", [("clips/a.wav", "spk", "zh", "你好|世界\nagain"), ("clips/b.wav", "s", "en", "hi")]
    )
    lines = (tmp_path / "o.list").read_text(encoding="utf-8").splitlines()
    assert lines == ["clips/a.wav|spk|ZH|你好 世界 again", "clips/b.wav|s|EN|hi"]
    items, problems = read_transcripts(tmp_path / "o.list")
    assert not problems and [t.language for t in items] == ["zh", "en"]


def test_language_codes():
    assert [normalize_language(c) for c in ("ZH", "JP", "ja", "EN", "Yue", "auto", "", None)] == [
        "zh", "ja", "ja", "en", "yue", "auto", None, None,
    ]  # fmt: skip
