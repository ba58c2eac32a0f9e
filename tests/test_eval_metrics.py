"""Evaluation building blocks that need no model: text normalisation, WER counting, DTW, mel distance, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gsvkit.errors import DataError, GsvError, TextError
from gsvkit.eval.evaluate import EvalItem, audio_dir_synthesizer, evaluate, items_from_list, load_items
from gsvkit.eval.mel import dtw_path, mel_distance, mel_distance_frames
from gsvkit.eval.report import EvalReport, ItemScore, to_markdown, write_report
from gsvkit.eval.wer import normalize_text, number_to_words, word_error_rate

pytest.importorskip("jiwer", reason="the eval extra (jiwer) is not installed")


def test_normalize_text_ignores_case_punctuation_and_digit_spelling():
    assert normalize_text("Don't PANIC -- it's 42!") == "dont panic its forty two"
    assert normalize_text("well-known, “quoted” words.") == "well known quoted words"
    assert normalize_text("In 1984 & 2001") == "in nineteen eighty four and two thousand one"
    assert number_to_words(1_000_017) == "one million seventeen"


def test_word_error_rate_counts_edits_after_normalisation():
    r = word_error_rate("the quick brown fox jumped", "The quick, brown fox jumps over!")
    assert (r.substitutions, r.deletions, r.insertions, r.hits) == (1, 1, 0, 4)
    assert r.wer == pytest.approx(2 / 6)
    assert word_error_rate("THE CAT.", "the cat").wer == 0.0
    assert word_error_rate("", "two words").wer == 1.0
    with pytest.raises(TextError):
        word_error_rate("anything", " ... ")


def _brute_force_dtw(cost: np.ndarray) -> float:
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    return float(acc[n, m])


def test_dtw_path_is_the_cheapest_monotonic_path():
    rng = np.random.default_rng(0)
    for shape in [(1, 5), (6, 1), (7, 11), (13, 9)]:
        cost = rng.random(shape)
        rows, cols = dtw_path(cost)
        assert rows[0] == cols[0] == 0 and rows[-1] == shape[0] - 1 and cols[-1] == shape[1] - 1
        steps = np.stack([np.diff(rows), np.diff(cols)], 1)
        assert set(map(tuple, steps)) <= {(0, 1), (1, 0), (1, 1)}
        assert cost[rows, cols].sum() == pytest.approx(_brute_force_dtw(cost))


def _tone(freqs: list[float], seconds: float, sr: int = 32000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    segs = np.array_split(t, len(freqs))
    return np.concatenate([0.3 * np.sin(2 * np.pi * f * s) for f, s in zip(freqs, segs, strict=True)]).astype(
        np.float32
    )


def test_mel_distance_aligns_different_lengths():
    ref = _tone([300, 600, 1200, 2400], 1.0)
    slower = _tone([300, 600, 1200, 2400], 1.3)  # same content, 30% longer
    other = _tone([2400, 1200, 600, 300], 1.0)  # same sounds, wrong order
    assert mel_distance(ref, ref, sr=32000).distance == 0.0
    near = mel_distance(slower, ref, sr=32000, ref_sr=32000)
    far = mel_distance(other, ref, sr=32000, ref_sr=32000, align=True)
    assert near.aligned and near.duration_ratio == pytest.approx(1.3, rel=1e-3)
    assert near.distance < 0.5 * far.distance
    with pytest.raises(ValueError):
        mel_distance_frames(np.zeros((4, 3)), np.zeros((4, 5)), align=False)


def test_report_json_and_markdown(tmp_path: Path):
    report = EvalReport(name="demo", target=["a.wav"], items=[
        ItemScore(id="u1", text="hello there", duration_s=1.0, similarity=0.8, wer=0.0, hypothesis="hello there"),
        ItemScore(id="u2", text="general kenobi", duration_s=2.0, similarity=0.6, wer=0.5, mel_distance=1.2,
                  duration_ratio=1.1),
        ItemScore(id="u3", text="x", duration_s=0.0, error="synthesis failed"),
    ]).summarize()
    assert report.summary["similarity"] == pytest.approx(0.7)
    assert report.summary["mel_distance"] == pytest.approx(1.2)
    assert report.summary["sentences"] == 3 and report.summary["failed"] == 1
    json_path, md_path = write_report(report, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert set(data) == {"name", "created", "target", "settings", "items", "summary"}
    assert data["items"][1]["duration_ratio"] == 1.1
    assert EvalReport.model_validate(data).summary == report.summary
    md = md_path.read_text()
    assert md == to_markdown(report)
    assert "| similarity | 0.700 |" in md and "error: synthesis failed" in md


def test_items_from_list_resolves_paths_and_rejects_bad_lines(tmp_path: Path):
    lst = tmp_path / "data.list"
    lst.write_text("wavs/a.wav|spk1|EN|Hello world.\n\n/abs/b.wav|spk2|ZH|你好\nwavs/c.wav|spk1|JP|こんにちは\n")
    items = items_from_list(lst)
    assert [(i.id, i.speaker, i.language) for i in items] == [("a", "spk1", "en"), ("b", "spk2", "zh"),
                                                             ("c", "spk1", "ja")]
    assert items[0].ground_truth == tmp_path / "wavs/a.wav" and items[1].ground_truth == Path("/abs/b.wav")
    assert [i.id for i in load_items(lst, speaker="spk1", limit=1)] == ["a"]
    lst.write_text("only|three|fields\n")
    with pytest.raises(DataError, match="data.list:1"):
        items_from_list(lst)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="no sentences"):
        load_items(tmp_path / "empty.txt")


def test_evaluate_scores_rendered_audio_and_records_failures(tmp_path: Path):
    import soundfile as sf

    sr = 32000
    truth = _tone([400, 800, 1600], 1.0)
    sf.write(tmp_path / "gt.wav", truth, sr)
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    sf.write(rendered / "good.wav", _tone([400, 800, 1600], 1.2), sr)
    items = [
        EvalItem("good", "a sentence", "en", tmp_path / "gt.wav"),
        EvalItem("missing", "another sentence", "en", tmp_path / "gt.wav"),
    ]
    seen = []
    report = evaluate(audio_dir_synthesizer(rendered), items, name="fake", metrics=["mel_distance", "duration_ratio"],
                      on_item=seen.append)
    good, missing = report.items
    assert good.error is None and good.duration_ratio == pytest.approx(1.2, rel=1e-3)
    assert good.mel_distance is not None and good.similarity is None and good.wer is None
    assert "missing" in missing.error and missing.mel_distance is None
    assert report.summary["failed"] == 1 and [s.id for s in seen] == ["good", "missing"]
    assert report.target == []  # similarity was not asked for


def test_scorer_targets_each_speaker_with_its_own_ground_truth():
    from gsvkit.eval.evaluate import Scorer

    items = [EvalItem("a1", "x", ground_truth=Path("a1.wav"), speaker="a"),
             EvalItem("b1", "x", ground_truth=Path("b1.wav"), speaker="b"),
             EvalItem("a2", "x", ground_truth=Path("a2.wav"), speaker="a"),
             EvalItem("n", "x", speaker="c")]
    scorer = Scorer(None, items=items)
    assert scorer.targets == {"a": [Path("a1.wav"), Path("a2.wav")], "b": [Path("b1.wav")]}
    assert scorer.target_embedding("c") is None  # no clip of speaker c: no similarity, not another speaker's
    explicit = Scorer(["t.wav"], items=items)
    assert explicit.targets == {None: ["t.wav"]} and explicit.target_audio() == ["t.wav"]
    with pytest.raises(GsvError, match="unknown metric"):
        Scorer(metrics=["loudness"])
