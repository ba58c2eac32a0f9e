"""An imperceptible watermark on everything gsvkit speaks, and its detection on audio gsvkit is fed.

The watermark is Resemble AI's PerTh "implicit" neural watermark (PyPI `resemble-perth`, MIT), whose trained weights
ship inside its wheel. It is a one-bit mark: an encoder adds a learned residual to the low 2 kHz of a 32 kHz
log-magnitude spectrogram, and a multi-rate decoder returns a score in [0, 1] for "this audio carries the mark".

The package's own entry points import torchaudio and pkg_resources, which do not exist for every torch build, so
gsvkit builds the same two small conv stacks from plain torch (`torch.stft`/`torch.istft` in place of torchaudio's
transforms) and reads the packaged weights with `torch.load(weights_only=True)`: only tensors are unpickled. The
layer names below are the ones the packaged state dict uses, so a mismatch fails loudly at load time.

`Watermarker.apply` marks a float32 mono signal; `Watermarker.detect` scores one. `get_watermarker()` loads the
network once per process, on first use.

Broadband noise (white noise at 20 dB SNR) fills the quiet bins of the band, where the mark lies below the noise,
and lowers the score. `detect` therefore also scores the spectrogram with its stationary noise floor taken out
(`remove_noise_floor`) and keeps the higher of the two scores.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gsvkit.errors import CheckpointError
from gsvkit.safety import WATERMARK_THRESHOLD

_SR = 32000  # the network's sample rate
_N_FFT = 2048
_HOP = 320
_MAG_MIN = 1e-9
_MIN_DB = 20.0 * float(np.log10(_MAG_MIN))  # -180 dB
_HEADROOM_DB = 15.0
_SUBBAND = 128  # bins below 2 kHz at 32 kHz / 2048-point FFT: the only part the mark lives in
_HIDDEN = 256
_WINDOW_S = 30.0  # long inputs are scored in windows of this length (bounded memory); the highest score counts
_WEIGHTS = "perth_net/pretrained/implicit/perth_net_250000.pth.tar"
_ID_FILE = "perth_net/pretrained/implicit/id.txt"


# Noise-floor removal (chosen on 40 clips of the benchmarks/watermark.py corpus and conditions): a bin's floor is its
# 10th-percentile power over frames; three times the floor is subtracted, and no bin goes below the floor less 20 dB
# (the floor of clean engine speech lies about 30 dB under that of the same speech under 20 dB SNR white noise).
# Zeroing the bins near the floor instead sent clean speech to scores over 0.5: the decoder never saw such holes.
# Frames whose band is not clear of the floor are left out of the decoder's average.
_FLOOR_QUANTILE = 0.1
_FLOOR_SUBTRACT = 3.0
_FLOOR_MIN_DB = -20.0
_FLOOR_CLEAR_DB = 6.0  # a frame is scored when its band lies this far above the floor on average (dB) ...
_FLOOR_MIN_FRAMES = 10  # ... unless fewer frames than this do: then every active frame is

_STEADY = 0.97  # spectral_steadiness at or above which a signal is a steady sound, not speech


@dataclass(frozen=True)
class Detection:
    """Result of scoring one signal: `score` in [0, 1]; `watermarked` when score >= threshold. `note` says why a
    signal could not be judged (then `watermarked` is False and `score` is 0)."""

    watermarked: bool
    score: float
    threshold: float = WATERMARK_THRESHOLD
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class _Conv(nn.Module):
    def __init__(self, i: int, o: int, k: int, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv1d(i, o, k, padding=(k - 1) // 2)
        self.act = nn.LeakyReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, i, T] -> [B, o, T]
        return self.act(self.conv(x))


def _conv_stack(c_in: int, c_out: int) -> nn.Sequential:
    # 1x1 in, five k=7 layers, 1x1 out; LeakyReLU after all but the last (the packaged architecture).
    return nn.Sequential(
        _Conv(c_in, _HIDDEN, 1), *[_Conv(_HIDDEN, _HIDDEN, 7) for _ in range(5)], _Conv(_HIDDEN, c_out, 1, act=False)
    )


def _normalise(db: torch.Tensor) -> torch.Tensor:
    """dB -> the network's normalised log-magnitude (_MIN_DB dB -> 0, _HEADROOM_DB dB -> 1)."""
    return (db - _MIN_DB) / (-_MIN_DB + _HEADROOM_DB)


def _to_db(mag: torch.Tensor) -> torch.Tensor:
    """The inverse of `_normalise`: normalised log-magnitude -> dB."""
    return mag * (-_MIN_DB + _HEADROOM_DB) + _MIN_DB


def _active_frames(mag: torch.Tensor) -> torch.Tensor:
    """[B, F, T] normalised log-magnitude -> [B, 1, T] mask of frames with energy over 5 % of the loudest."""
    s = mag.sum(dim=1)  # [B, T]
    return (s > s.max(dim=1).values[:, None] * 0.05).float()[:, None]


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * m).sum(dim=2) / m.sum(dim=2).clamp_min(1.0)  # [B, C]


def spectral_steadiness(mag: torch.Tensor) -> float:
    """[1, F, T] normalised log-magnitude -> how alike the active frames' watermark-band spectra are: the mean cosine
    similarity of each frame's power spectrum (scaled to sum 1) to their mean. About 0.99 for a pure tone, mains hum
    or a held harmonic note; at most 0.80 for the 210 corpus clips of benchmarks/watermark.py (clean, marked,
    resampled to 16 kHz or under 20 dB white noise), at most 0.95 for the buzz of the tiny test models, about 0.71
    for white noise.

    The decoder was trained on speech; a steady sound can drive it to a high score whether or not it is marked, so
    such a signal is reported as not judgeable instead of as watermarked."""
    db = _to_db(mag[0, :_SUBBAND])
    power = 10.0 ** (db / 10.0)  # [F_band, T]
    active = _active_frames(mag)[0, 0] > 0  # [T]
    if not bool(active.any()):
        return 0.0
    p = power[:, active]
    p = p / p.sum(dim=0, keepdim=True).clamp_min(1e-30)  # [F_band, T'] each frame's spectrum, summing to 1
    mean = p.mean(dim=1, keepdim=True)  # [F_band, 1]
    cos = (p * mean).sum(dim=0) / (p.norm(dim=0) * mean.norm()).clamp_min(1e-30)  # [T']
    return float(cos.mean())


def remove_noise_floor(mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, F, T] normalised log-magnitude -> (the same with each bin's stationary noise floor subtracted in power,
    floored at 20 dB under that floor; [B, 1, T] mask of its active frames whose band stands clear of the floor).

    Frames of noise alone (pauses) carry no mark once noise covers it; the decoder averages over the frames it is
    given, so they are left out of the mask instead of diluting the frames of speech."""
    db = _to_db(mag)
    floor = torch.quantile(db, _FLOOR_QUANTILE, dim=2, keepdim=True)  # [B, F, 1]
    power, noise = 10.0 ** (db / 10.0), 10.0 ** (floor / 10.0)
    clean = torch.maximum(power - _FLOOR_SUBTRACT * noise, noise * 10.0 ** (_FLOOR_MIN_DB / 10.0))
    out = _normalise(10.0 * torch.log10(clean))
    active = _active_frames(out)
    clear = ((db - floor)[:, :_SUBBAND].mean(dim=1, keepdim=True) > _FLOOR_CLEAR_DB).float()  # [B, 1, T]
    mask = active * clear
    return out, torch.where(mask.sum(dim=2, keepdim=True) >= _FLOOR_MIN_FRAMES, mask, active)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = _conv_stack(_SUBBAND, _SUBBAND)

    def forward(self, mag: torch.Tensor) -> torch.Tensor:  # [B, F, T] -> [B, F, T]
        out = mag.clone()
        out[:, :_SUBBAND] += self.layers(mag[:, :_SUBBAND]) * _active_frames(mag)
        return out


class _Decoder(nn.Module):
    # Three branches read the band at 1.25x, 1x and 0.75x time scale (robust to speed changes); each gives a mark
    # value and an attention logit, averaged over active frames; a softmax over branches combines them.
    def __init__(self) -> None:
        super().__init__()
        self.slow_layers = _conv_stack(_SUBBAND, 2)
        self.normal_layers = _conv_stack(_SUBBAND, 2)
        self.fast_layers = _conv_stack(_SUBBAND, 2)

    def forward(self, mag: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # [B, F, T] -> [B]
        mask = _active_frames(mag) if mask is None else mask  # [B, 1, T]: the frames averaged over
        band = mag[:, :_SUBBAND]
        t = band.shape[2]
        marks, attns = [], []
        for layers, scale in ((self.slow_layers, 1.25), (self.normal_layers, 1.0), (self.fast_layers, 0.75)):
            x = band if scale == 1.0 else F.interpolate(band, size=int(t * scale), mode="linear", align_corners=True)
            out = layers(x)  # [B, 2, T']
            m = F.interpolate(mask, size=out.shape[2], mode="nearest")
            attns.append(_masked_mean(out[:, :1], m))
            marks.append(_masked_mean(out[:, 1:], m))
        attn = torch.softmax(torch.cat(attns, dim=1), dim=1)  # [B, 3]
        return (torch.cat(marks, dim=1) * attn).sum(dim=1)


class _PerthNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.decoder = _Decoder()


def _package_file(rel: str) -> Path:
    # find_spec locates the installed package without importing it (its __init__ needs torchaudio).
    spec = importlib.util.find_spec("perth")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the output watermark needs the resemble-perth package (its weights ship in its wheel): "
            "pip install resemble-perth"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise CheckpointError(f"{path}: resemble-perth is installed without its weights; reinstall it")
    return path


class Watermarker:
    """The loaded network: `apply` marks audio, `detect` scores it. Thread-safe (inference only)."""

    def __init__(self, device: str = "cpu") -> None:
        weights = _package_file(_WEIGHTS)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
        except Exception as err:  # a damaged install; never fall back to a full unpickle
            raise CheckpointError(f"{weights}: cannot read the watermark weights ({err})") from None
        net = _PerthNet()
        # The packaged state also holds torchaudio's STFT windows (plain Hann windows, rebuilt here).
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("ap.")})
        self.net = net.eval().to(device)
        self.device = device
        self.model_id = "perth-implicit:" + _package_file(_ID_FILE).read_text().strip()
        self._window = torch.hann_window(_N_FFT, device=device)

    # [S] -> (normalised log-magnitude [1, F, T], phase [1, F, T])
    def _analyse(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = torch.stft(wav, _N_FFT, _HOP, _N_FFT, self._window, center=True, pad_mode="reflect", return_complex=True)
        mag = 20.0 * torch.log10(spec.abs().clamp_min(_MAG_MIN))
        return _normalise(mag)[None], torch.angle(spec)[None]

    def apply(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Watermark float32 mono `audio` [S]; returns the same length, clipped to [-1, 1]."""
        from gsvkit.audio.io import resample

        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size < _N_FFT or not np.any(audio):
            return audio  # too short for one analysis frame, or silence: nothing to carry the mark
        x = resample(audio, sample_rate, _SR)
        with torch.inference_mode():
            mag, phase = self._analyse(torch.from_numpy(x).to(self.device))
            marked = self.net.encoder(mag)[0]
            db = _to_db(marked)
            spec = torch.polar(10.0 ** (db / 20.0).clamp(max=10.0), phase[0])
            y = torch.istft(spec, _N_FFT, _HOP, _N_FFT, self._window, center=True, length=x.size)
        out = resample(y.cpu().numpy(), _SR, sample_rate)
        out = out[: audio.size] if out.size >= audio.size else np.pad(out, (0, audio.size - out.size))
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def detect(self, audio: np.ndarray, sample_rate: int, threshold: float = WATERMARK_THRESHOLD) -> Detection:
        """Score float32 mono `audio`; a long signal is scored in 30 s windows and its highest score counts. Each
        window is scored as heard and with its noise floor removed (`remove_noise_floor`); the higher score counts."""
        from gsvkit.audio.io import resample

        x = resample(np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate, _SR)
        if x.size < _N_FFT or not np.any(x):
            return Detection(watermarked=False, score=0.0, threshold=threshold)
        step = int(_WINDOW_S * _SR)
        best, steady = 0.0, True
        with torch.inference_mode():
            for start in range(0, x.size, step):
                piece = x[start : start + step]
                if piece.size < _N_FFT or (start and piece.size < _SR):
                    continue  # a short tail is scored with its window's neighbour only
                mag, _ = self._analyse(torch.from_numpy(piece).to(self.device))
                if spectral_steadiness(mag.cpu()) >= _STEADY:
                    continue  # a steady sound says nothing about the mark (see spectral_steadiness)
                steady = False
                for score in (self.net.decoder(mag), self.net.decoder(*remove_noise_floor(mag))):
                    best = max(best, float(score[0].clamp(0.0, 1.0)))
        if steady:
            note = "a steady sound (a tone or a held note), not speech: the watermark detector cannot judge it"
            return Detection(watermarked=False, score=0.0, threshold=threshold, note=note)
        return Detection(watermarked=best >= threshold, score=round(best, 4), threshold=threshold)

    def detect_file(self, path: str | Path, threshold: float = WATERMARK_THRESHOLD) -> Detection:
        from gsvkit.audio.io import read_audio

        wav, sr = read_audio(path)
        return self.detect(wav, sr, threshold)


_lock = threading.Lock()


@lru_cache(maxsize=2)
def _load(device: str) -> Watermarker:
    return Watermarker(device)


def get_watermarker(device: str = "cpu") -> Watermarker:
    """The process-wide network (loaded on first call)."""
    with _lock:
        return _load(device)


def refuse_synthetic(path: str | Path, what: str, override: str) -> Detection:
    """Raise `SyntheticAudioError` when the file carries the watermark; `override` names the switch that allows it."""
    from gsvkit.errors import SyntheticAudioError

    det = get_watermarker().detect_file(path)
    if det.watermarked:
        raise SyntheticAudioError(
            f"{path}: {what} carries a speech-synthesis watermark (score {det.score:.2f}): it was generated, not "
            f"recorded, and is refused by default; pass {override} if you really mean to use synthetic audio"
        )
    return det


__all__ = [
    "Detection",
    "WATERMARK_THRESHOLD",
    "Watermarker",
    "get_watermarker",
    "refuse_synthetic",
    "remove_noise_floor",
]
