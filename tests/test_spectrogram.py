"""Spectrogram and mel front end of s2 against upstream's own outputs (tests/fixtures/gsv_v2_parity)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from gsvkit.audio.spectrogram import mel_filterbank, mel_spectrogram, spec_to_mel, spectrogram
from gsvkit.config import S2DataConfig, load_config
from parity import assert_close, load_case

CASE = load_case("s2_spectrogram_case0.npz")


def test_mel_basis_matches_librosa_slaney() -> None:
    basis = mel_filterbank(32000, 2048, 128, 0.0, None)
    assert basis.shape == (128, 1025) and basis.dtype == np.float32
    assert np.array_equal(basis, CASE["mel_basis"])


def test_hann_window_is_periodic() -> None:
    from gsvkit.audio.spectrogram import _hann

    assert_close(_hann(2048, "cpu", "float32"), CASE["hann_window"], "hann_window")


@pytest.mark.parametrize("which", ["a", "b"])
def test_spectrogram_and_mel_match_upstream(which: str) -> None:
    cfg = S2DataConfig()
    wav = torch.from_numpy(CASE[f"wav_{which}"]).unsqueeze(0)  # [1, T]
    spec = spectrogram(wav, cfg)
    assert_close(spec, CASE[f"spec_{which}"], f"spec_{which}")
    assert_close(spec_to_mel(spec, cfg), CASE[f"mel_{which}"], f"mel_{which}")
    assert_close(mel_spectrogram(wav, cfg), CASE[f"mel_from_wav_{which}"], f"mel_from_wav_{which}")


@pytest.mark.parametrize("length", [705, 1279, 1280, 48000, 50123])
def test_frame_count_is_len_over_hop(length: int) -> None:
    wav = torch.randn(2, length) * 0.1
    assert spectrogram(wav, S2DataConfig()).shape == (2, 1025, length // 640)


def test_too_short_audio_is_a_clear_error() -> None:
    from gsvkit.errors import AudioError

    with pytest.raises(AudioError, match="too short"):
        spectrogram(torch.zeros(1, 704), S2DataConfig())


def test_silence_reads_1e_minus_4_and_mel_floor() -> None:
    cfg = S2DataConfig()
    spec = spectrogram(torch.zeros(1, 6400), cfg)
    assert torch.allclose(spec, torch.full_like(spec, 1e-4))
    mel = spec_to_mel(spec, cfg)
    assert torch.all(mel >= np.log(1e-5) - 1e-6)


def test_no_clipping_of_loud_input() -> None:
    cfg = S2DataConfig()
    wav = torch.randn(1, 6400) * 0.2
    assert_close(spectrogram(3.0 * wav, cfg), 3.0 * spectrogram(wav, cfg).numpy(), "linear in amplitude")


def test_tiny_config_and_other_filterbanks() -> None:
    librosa = pytest.importorskip("librosa")
    data = load_config("configs/tiny/s2.yaml").data
    spec = spectrogram(torch.randn(3, 1000) * 0.1, data)
    assert spec.shape == (3, data.filter_length // 2 + 1, 1000 // data.hop_length)
    assert spec_to_mel(spec, data).shape == (3, data.n_mel_channels, spec.shape[-1])
    for sr, n_fft, n_mels, fmin, fmax in [(16000, 256, 40, 0.0, None), (22050, 1024, 80, 50.0, 8000.0)]:
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert np.allclose(mel_filterbank(sr, n_fft, n_mels, fmin, fmax), ref, rtol=0, atol=1e-7)


def test_double_precision_and_1d_input() -> None:
    cfg = S2DataConfig()
    wav = torch.from_numpy(CASE["wav_a"]).double()
    spec = spectrogram(wav, cfg)
    assert spec.dtype == torch.float64 and spec.shape == (1, 1025, 75)
    assert_close(spec_to_mel(spec, cfg), CASE["mel_a"], "mel fp64")


def test_module_does_not_import_librosa() -> None:
    code = "import sys, gsvkit.audio.spectrogram as s; assert 'librosa' not in sys.modules, 'librosa imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
