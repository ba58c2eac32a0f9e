"""The silence slicer: upstream slicer2 semantics on signals with known silences, and the max-length re-split."""

from __future__ import annotations

import numpy as np
import pytest

from gsvkit.audio.slicer import Slicer, frame_rms, split_long

SR = 16000


def build(parts: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """(seconds, level) segments: level 0 is digital silence, else noise at that RMS level."""
    rng = np.random.default_rng(seed)
    return np.concatenate([level * rng.standard_normal(int(d * SR)) for d, level in parts]).astype(np.float32)


def test_frame_rms_matches_direct_computation():
    x = np.random.default_rng(1).standard_normal(1000)
    rms = frame_rms(x, 64, 16)
    padded = np.pad(x, 32)
    direct = [np.sqrt(np.mean(padded[i * 16 : i * 16 + 64] ** 2)) for i in range(len(rms))]
    assert np.allclose(rms, direct)
    assert len(rms) == 1 + 1000 // 16


def test_cuts_in_long_silences_between_long_enough_clips():
    wav = build([(5.0, 0.1), (1.0, 0.0), (5.0, 0.1), (1.0, 0.0), (5.0, 0.1)])
    bounds = Slicer(SR).slice(wav)
    assert len(bounds) == 3
    (s0, e0), (s1, e1), (s2, e2) = (tuple(b / SR for b in x) for x in bounds)
    assert s0 == 0.0 and e2 == pytest.approx(17.0, abs=0.01)
    # at most max_sil_kept (0.5 s) of each 1 s silence stays with a clip, and the cut lies inside the silence
    assert 5.0 <= e0 <= 5.5 and e0 <= s1 <= 6.0 and 6.0 - s1 <= 0.52
    assert 11.0 <= e1 <= 11.5 and e1 <= s2 <= 12.0 and 12.0 - s2 <= 0.52


def test_short_pieces_merge_until_min_length():
    # 1 s bursts separated by 0.4 s silences: a clip may only end once it is 4 s long, counted (as upstream does)
    # up to the end of the silence that ends it, so the clip itself may be up to that silence shorter
    wav = build([(1.0, 0.1), (0.4, 0.0)] * 8)
    bounds = Slicer(SR).slice(wav)
    lengths = [(e - s) / SR for s, e in bounds]
    assert len(bounds) >= 2
    assert all(length >= 4.0 - 0.4 for length in lengths[:-1])
    assert sum(lengths) < len(wav) / SR  # some silence was removed


def test_silences_shorter_than_min_interval_never_cut():
    wav = build([(3.0, 0.1), (0.2, 0.0), (3.0, 0.1)])
    assert Slicer(SR, min_length=1000).slice(wav) == [(0, len(wav))]


def test_threshold_decides_what_is_silence():
    wav = build([(5.0, 0.1), (1.0, 0.01), (5.0, 0.1)])  # the gap is at -40 dB
    assert len(Slicer(SR, threshold=-34).slice(wav)) == 2
    assert len(Slicer(SR, threshold=-45).slice(wav)) == 1


def test_leading_and_trailing_silence_trimmed():
    wav = build([(2.0, 0.0), (5.0, 0.1), (3.0, 0.0)])
    [(start, end)] = Slicer(SR).slice(wav)
    assert 1.45 <= start / SR <= 2.0 and 7.0 <= end / SR <= 7.55


def test_all_silent_gives_at_most_a_sliver_and_empty_gives_nothing():
    # upstream keeps up to max_sil_kept of a silence; such slivers are then dropped as too short (< 0.6 s)
    assert all(e - s <= 0.5 * SR for s, e in Slicer(SR).slice(np.zeros(SR * 3, np.float32)))
    assert Slicer(SR).slice(np.zeros(0, np.float32)) == []


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="min_length >= min_interval"):
        Slicer(SR, min_length=100, min_interval=300)
    with pytest.raises(ValueError, match="max_sil_kept"):
        Slicer(SR, max_sil_kept=5, hop_size=10)


def test_split_long_cuts_at_the_quietest_point():
    # 30 s of sound with a dip at 12 s: the cut must land in the dip, and every piece must fit
    wav = build([(12.0, 0.1), (0.1, 0.001), (17.9, 0.1)], seed=3)
    pieces = split_long(wav, SR, [(0, len(wav))], 20.0)
    assert len(pieces) == 2
    cut = pieces[0][1] / SR
    assert 12.0 <= cut <= 12.1
    assert pieces[0][0] == 0 and pieces[-1][1] == len(wav) and pieces[0][1] == pieces[1][0]


def test_split_long_recurses_and_keeps_pieces_long_enough():
    wav = build([(65.0, 0.1)], seed=4)
    pieces = split_long(wav, SR, [(0, len(wav))], 20.0)
    lengths = [(e - s) / SR for s, e in pieces]
    assert all(5.0 - 0.02 <= x <= 20.0 for x in lengths) and sum(lengths) == pytest.approx(65.0)
    assert split_long(wav, SR, [(0, SR * 5)], 20.0) == [(0, SR * 5)]
