"""Reading, writing, resampling and level normalisation of audio.

Audio inside gsvkit is a float32 mono numpy array in [-1, 1] at a known sampling rate. Reading goes through
soundfile (libsndfile reads wav, flac, ogg/vorbis, opus and — from libsndfile 1.1 — mp3), resampling through soxr
(its "HQ" quality, which is what `librosa.resample(res_type="soxr_hq")` uses).

Level normalisation follows upstream's preparation: a mix of the peak-normalised and the raw signal
(`peak_mix`), applied once after slicing (peak 0.9, alpha 0.25) and once before feature extraction
(peak 0.95, alpha 0.5). `integrated_loudness` measures ITU-R BS.1770-4 loudness (K-weighting, 400 ms blocks,
absolute and relative gates) for the LUFS option.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gsvkit import limits
from gsvkit.errors import AudioError
from gsvkit.utils.io import atomic_path

# Containers `save_audio` writes, by file suffix: (soundfile format, subtype).
_WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")


def load_audio(path: str | Path, sr: int | None = None) -> np.ndarray:
    """Read any file soundfile can decode as float32 mono, resampled to `sr` (None keeps the file's rate).

    Stereo and multi-channel audio is averaged to mono (as upstream's ffmpeg `-ac 1`). Raises `AudioError` naming
    the file when it is missing, unreadable or holds no samples.
    """
    wav, file_sr = read_audio(path)
    if sr is not None and sr != file_sr:
        wav = resample(wav, file_sr, sr)
    return wav


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a file as float32 mono at its own sampling rate: (wav [T], sr)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except Exception as err:  # libsndfile reports corrupt or unknown formats with varied exception types
        raise AudioError(
            f"{path}: cannot decode audio ({_short(err)}); convert it to wav/flac/ogg/mp3 or remove it"
        ) from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if file_sr < limits.MIN_SAMPLE_RATE:
        raise AudioError(
            f"{path}: sample rate {file_sr} Hz is below MIN_SAMPLE_RATE={limits.MIN_SAMPLE_RATE} Hz; this is not "
            "speech audio (or its header is damaged)"
        )
    kept = wav_fraction_present(path)
    if kept < 0.999:
        raise AudioError(
            f"{path}: truncated: only {kept:.0%} of the audio its header declares is in the file; copy or export "
            "it again"
        )
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: the audio contains NaN or infinite samples")
    return np.ascontiguousarray(wav, dtype=np.float32), int(file_sr)


def wav_fraction_present(path: Path) -> float:
    """For a RIFF/WAVE file: the share of the declared `data` chunk actually in the file (1.0 for other formats).

    libsndfile quietly shortens a truncated WAV to what is there; the header still says how long it was.
    """
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 1.0
        pos = 12
        for _ in range(64):  # chunks before `data` (fmt, LIST, fact, ...)
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return 1.0
            cid, n = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if n in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                    return 1.0
                return min(1.0, (size - pos - 8) / n)
            pos += 8 + n + (n & 1)
    return 1.0


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """soxr high-quality resampling of a mono float signal."""
    if sr_in == sr_out:
        return np.asarray(wav, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(wav, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def save_audio(path: str | Path, wav: np.ndarray, sr: int) -> None:
    """Write mono audio atomically as 16-bit wav/flac or ogg/vorbis, chosen by the suffix.

    Samples are clipped to [-1, 1] first: soundfile would otherwise wrap around on integer conversion.
    """
    import soundfile as sf

    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write {path.suffix!r} audio; use one of {', '.join(_WRITE_FORMATS)}")
    data = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, int(sr), format=fmt[0], subtype=fmt[1])


def pcm16(wav: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 the way upstream writes its clips (scale 32767, truncation toward zero)."""
    return (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)


# ------------------------------------------------------------------------------------------- level normalisation
def peak_mix(wav: np.ndarray, peak: float, alpha: float) -> np.ndarray:
    """Upstream's normalisation: `alpha` parts peak-normalised to `peak` plus `1 - alpha` parts the raw signal.

    A clip whose peak exceeds 1 is first scaled down to peak 1 (upstream's slicer does the same). Silent input is
    returned unchanged.
    """
    wav = np.asarray(wav, dtype=np.float32)
    top = float(np.abs(wav).max()) if wav.size else 0.0
    if top <= 0.0:
        return wav.copy()
    if top > 1.0:
        wav = wav / top
        top = 1.0
    return (wav / top * (peak * alpha) + (1.0 - alpha) * wav).astype(np.float32)


def _biquad_response(b: np.ndarray, a: np.ndarray, n_fft: int) -> np.ndarray:
    z = np.exp(-1j * np.pi * np.arange(n_fft // 2 + 1) / (n_fft // 2))  # e^{-jw} on the rfft grid
    return (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)


def _k_weighting(sr: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """BS.1770 K-weighting (high shelf then RLB high-pass) as biquads for any rate (libebur128's derivation)."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = np.tan(np.pi * f0 / sr)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    f0, q = 38.13547087602444, 0.5003270373238773
    k = np.tan(np.pi * f0 / sr)
    a0 = 1.0 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return [(shelf_b, shelf_a), (hp_b, hp_a)]


def k_weight(wav: np.ndarray, sr: int) -> np.ndarray:
    """Apply the K-weighting filters (zero initial state) to a mono signal.

    The two IIR biquads are applied in the frequency domain on a zero-padded signal: the padding is long enough
    for the filters' impulse responses to decay below 1e-12, so the result equals direct-form filtering to that
    precision while staying in vectorised numpy.
    """
    x = np.asarray(wav, dtype=np.float64)
    sections = _k_weighting(sr)
    radius = max(float(np.abs(np.roots(a)).max()) for _, a in sections)
    tail = int(np.ceil(np.log(1e-12) / np.log(radius))) + 64 if radius < 1.0 else sr
    n_fft = 1 << int(np.ceil(np.log2(x.size + tail)))
    spec = np.fft.rfft(x, n_fft)
    for b, a in sections:
        spec = spec * _biquad_response(b, a, n_fft)
    return np.fft.irfft(spec, n_fft)[: x.size]


def integrated_loudness(wav: np.ndarray, sr: int) -> float:
    """ITU-R BS.1770-4 integrated loudness of a mono signal in LUFS (-inf when everything is gated out)."""
    y = k_weight(wav, sr)
    block, step = int(round(0.4 * sr)), int(round(0.1 * sr))  # 400 ms blocks, 75 % overlap
    if y.size < block:
        return float("-inf")
    starts = np.arange(0, y.size - block + 1, step)
    energy = np.cumsum(np.concatenate([[0.0], y * y]))
    z = (energy[starts + block] - energy[starts]) / block  # mean square per block
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(z)
    gated = z[block_lufs > -70.0]  # absolute gate
    if gated.size == 0:
        return float("-inf")
    relative = -0.691 + 10.0 * np.log10(gated.mean()) - 10.0
    gated = z[(block_lufs > -70.0) & (block_lufs > relative)]
    if gated.size == 0:
        return float("-inf")
    return float(-0.691 + 10.0 * np.log10(gated.mean()))


def normalize_loudness(wav: np.ndarray, sr: int, target_lufs: float = -23.0, peak_limit: float = 0.99) -> np.ndarray:
    """Scale to `target_lufs` integrated loudness, then down again if that would push the peak above `peak_limit`.

    Clips too short or quiet to measure (fewer than 400 ms above the gates) fall back to peak normalisation.
    """
    wav = np.asarray(wav, dtype=np.float32)
    top = float(np.abs(wav).max()) if wav.size else 0.0
    if top <= 0.0:
        return wav.copy()
    loudness = integrated_loudness(wav, sr)
    gain = 10.0 ** ((target_lufs - loudness) / 20.0) if np.isfinite(loudness) else peak_limit / top
    gain = min(gain, peak_limit / top)
    return (wav * gain).astype(np.float32)


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
