"""Audio reading (formats, channels, rates), atomic writing, and level normalisation (peak mix, BS.1770 LUFS)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from gsvkit.audio.io import (
    integrated_loudness,
    k_weight,
    load_audio,
    normalize_loudness,
    pcm16,
    peak_mix,
    read_audio,
    resample,
    save_audio,
)
from gsvkit.errors import AudioError


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


@pytest.mark.parametrize(("suffix", "sr"), [(".wav", 44100), (".flac", 22050), (".ogg", 48000), (".mp3", 24000)])
def test_load_any_format_to_mono_at_rate(tmp_path, suffix, sr):
    left, right = sine(440, 1.0, sr, 0.4), sine(440, 1.0, sr, 0.2)
    path = tmp_path / f"x{suffix}"
    sf.write(path, np.stack([left, right], 1), sr)
    wav = load_audio(path, 16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 16000) <= 1200  # mp3 adds encoder padding
    peak = np.abs(wav[2000:-2000]).max()
    assert 0.25 < peak < 0.35  # the mean of the two channels (0.3)


def test_resample_keeps_a_tone(tmp_path):
    x = sine(1000, 1.0, 44100)
    y = resample(x, 44100, 32000)
    assert len(y) == 32000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) - 1000) <= 1


@pytest.mark.parametrize("content", [b"", b"not audio at all" * 20, b"RIFF\x00\x00\x00\x00WAVEfmt junk"])
def test_unreadable_audio_names_the_file(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(path, 16000)
    with pytest.raises(AudioError, match="not found"):
        read_audio(tmp_path / "missing.wav")


def test_empty_audio_is_an_error(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(path)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_save_audio_round_trip(tmp_path, suffix):
    x = sine(300, 0.5, 16000, 0.7)
    path = tmp_path / f"out{suffix}"
    save_audio(path, x, 16000)
    y, sr = read_audio(path)
    assert sr == 16000 and len(y) == len(x)
    tol = 0.05 if suffix == ".ogg" else 1e-4
    assert np.abs(y - x).max() < tol
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_save_audio_clips_and_refuses_unknown_formats(tmp_path):
    save_audio(tmp_path / "loud.wav", np.array([2.0, -3.0, 0.5], np.float32), 8000)
    y, _ = read_audio(tmp_path / "loud.wav")
    assert y.max() <= 1.0 and y.min() >= -1.0
    with pytest.raises(AudioError, match="cannot write"):
        save_audio(tmp_path / "x.xyz", np.zeros(10, np.float32), 8000)
    assert pcm16(np.array([1.0, -1.0, 0.5]))[0] == 32767


def test_peak_mix_matches_upstream_formula():
    x = np.array([0.0, 0.2, -0.4, 0.1], np.float32)
    y = peak_mix(x, 0.9, 0.25)
    expected = x / 0.4 * (0.9 * 0.25) + 0.75 * x
    assert np.allclose(y, expected)
    assert np.isclose(np.abs(peak_mix(x, 0.95, 0.5)).max(), 0.95 * 0.5 + 0.5 * 0.4)
    loud = np.array([0.0, 2.0, -1.0], np.float32)  # above full scale: first scaled to peak 1
    assert np.isclose(np.abs(peak_mix(loud, 0.9, 0.25)).max(), 0.9 * 0.25 + 0.75)
    assert not np.any(peak_mix(np.zeros(5, np.float32), 0.9, 0.25))


def test_bs1770_reference_levels():
    # BS.1770: a 997 Hz sine at full scale in one channel reads -3.01 LKFS; loudness scales with gain
    sr = 48000
    x = sine(997, 5.0, sr, 1.0)
    assert abs(integrated_loudness(x, sr) - (-3.01)) < 0.02
    assert abs(integrated_loudness(x * 0.1, sr) - (-23.01)) < 0.02
    assert abs(integrated_loudness(sine(997, 5.0, 44100, 1.0), 44100) - (-3.01)) < 0.03
    assert integrated_loudness(np.zeros(sr * 2, np.float32), sr) == float("-inf")
    assert integrated_loudness(x[:1000], sr) == float("-inf")  # shorter than one 400 ms block


def test_k_weighting_equals_direct_filtering():
    signal = pytest.importorskip("scipy.signal")
    from gsvkit.audio.io import _k_weighting

    x = np.random.default_rng(0).standard_normal(20000)
    y = x
    for b, a in _k_weighting(32000):
        y = signal.lfilter(b, a, y)
    assert np.abs(k_weight(x, 32000) - y).max() < 1e-8


def test_normalize_loudness_hits_target_and_respects_peak():
    sr = 16000
    x = sine(440, 3.0, sr, 0.05)
    y = normalize_loudness(x, sr, -20.0)
    assert abs(integrated_loudness(y, sr) - (-20.0)) < 0.05
    z = normalize_loudness(x, sr, -1.0, peak_limit=0.5)  # would clip: limited by the peak instead
    assert np.isclose(np.abs(z).max(), 0.5, atol=1e-4)
