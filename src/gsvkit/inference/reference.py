"""Reference audio: checks, prompt tokens and spectrograms, cached per file.

What upstream computes from the reference clip (`TTS._set_prompt_semantic` / `_get_ref_spec`):
- the clip at 16 kHz must hold 3-10 s (48,000-160,000 samples);
- zeros are appended before HuBERT: `int(0.3 * s2 sampling rate)` samples *at 16 kHz* (0.6 s for the official
  32 kHz models; kept for parity, since the prompt tokens of the trailing silence shape how s1 starts);
- HuBERT features -> `s2.extract_latent` (the fine-tuned ssl_proj + quantizer) -> the prompt tokens;
- the clip at s2's own rate, scaled down when its peak exceeds 1 (by at most 2x), -> linear spectrogram, which
  s2's reference encoder turns into the timbre embedding;
- v2Pro/v2ProPlus: that same s2-rate waveform, resampled to 16 kHz, -> ERes2NetV2 speaker embedding (one per
  reference, aux references included). A voice stores them (`speaker.safetensors`), so it speaks without the
  speaker-verification model.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gsvkit.errors import AudioError, CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    from gsvkit.config import S2DataConfig
    from gsvkit.inference.voice import Voice

HUBERT_SR = 16_000
REF_MIN_SECONDS = 3.0
REF_MAX_SECONDS = 10.0
PAD_SECONDS = 0.3
# A reference whose peak stays under -60 dBFS carries no voice to clone.
SILENCE_PEAK = 1e-3


def check_reference(wav16k: np.ndarray, source: str | os.PathLike, sr: int = HUBERT_SR) -> np.ndarray:
    """Raise `AudioError` unless `wav16k` (at `sr`) is 3-10 s of non-silent audio; return it unchanged."""
    n = int(wav16k.shape[-1])
    seconds = n / sr
    if n < REF_MIN_SECONDS * sr or n > REF_MAX_SECONDS * sr:
        raise AudioError(
            f"{source}: reference audio is {seconds:.2f} s long; it must be {REF_MIN_SECONDS:g}-{REF_MAX_SECONDS:g} s "
            "(trim it or pick another clip)"
        )
    peak = float(np.abs(wav16k).max()) if n else 0.0
    if peak < SILENCE_PEAK:
        raise AudioError(f"{source}: reference audio is silent (peak {peak:.2e}); record or pick a clip with speech")
    return wav16k


def load_reference_16k(path: str | os.PathLike) -> np.ndarray:
    """Read a reference clip at 16 kHz and check its length and level."""
    from gsvkit.audio.io import load_audio

    return check_reference(load_audio(path, HUBERT_SR), path)


def pad_samples(s2_sampling_rate: int) -> int:
    """Zeros appended to the 16 kHz reference before HuBERT (see the module docstring)."""
    return int(s2_sampling_rate * PAD_SECONDS)


@torch.no_grad()
def prompt_tokens(wav16k: np.ndarray, hubert: Any, s2: Any, s2_sampling_rate: int) -> torch.Tensor:
    """Semantic tokens of a reference clip: [Tp] long."""
    wav = np.concatenate([wav16k.astype(np.float32), np.zeros(pad_samples(s2_sampling_rate), np.float32)])
    ssl = hubert(wav)  # [1, ssl_dim, T50]
    device = getattr(s2, "device", None)
    if not isinstance(device, torch.device):  # a torch module: match its device and dtype
        param = next(s2.parameters())
        ssl = ssl.to(param.device, dtype=param.dtype)
    codes = s2.extract_latent(ssl)  # [1, 1, T50 // 2]
    return codes[0, 0].long().cpu()


def _s2_rate_reference(path: str | os.PathLike, data: S2DataConfig, check: bool) -> torch.Tensor:
    """The reference at s2's rate, scaled down by at most 2x when its peak exceeds 1: [T]."""
    from gsvkit.audio.io import load_audio

    wav = load_audio(path, data.sampling_rate)
    if check:
        check_reference(wav, path, data.sampling_rate)
    wav = torch.from_numpy(wav)
    peak = float(wav.abs().max())
    if peak > 1.0:
        wav = wav / min(2.0, peak)
    return wav


@torch.no_grad()
def reference_spectrogram(path: str | os.PathLike, data: S2DataConfig, check: bool = False) -> torch.Tensor:
    """Linear spectrogram s2's reference encoder expects: [1, bins, F]. `check`: apply `check_reference`."""
    from gsvkit.audio.spectrogram import spectrogram

    return spectrogram(_s2_rate_reference(path, data, check).unsqueeze(0), data)  # [1, bins, F]


@torch.no_grad()
def reference_speaker_embedding(path: str | os.PathLike, data: S2DataConfig, sv: Any) -> torch.Tensor:
    """v2Pro: the speaker embedding of a reference clip, [1, sv.dim] float32 on the CPU.

    As upstream, the s2-rate waveform the spectrogram comes from is resampled to 16 kHz (soxr here, torchaudio's
    sinc resampler upstream: the measured difference is in README.md).
    """
    from gsvkit.audio.io import resample
    from gsvkit.models.sv import SAMPLE_RATE

    wav = resample(_s2_rate_reference(path, data, False).numpy(), data.sampling_rate, SAMPLE_RATE)
    try:
        return sv.embed(torch.from_numpy(wav)[None]).cpu()
    except AudioError as err:
        raise AudioError(f"{path}: {err}") from None


def _file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise AudioError(f"{p}: reference audio not found") from None
    return str(p.resolve()), st.st_mtime_ns, st.st_size


class ReferenceCache:
    """Small LRU of prompt tokens and spectrograms, keyed by file identity and the s2 model that made them.

    Keys hold (resolved path, mtime, size), so an edited file is recomputed; and the id of the model bundle, so
    switching s2 weights never serves tokens quantised by the previous model.
    """

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def _put(self, key: tuple, value: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def spectrogram(
        self, path: str | os.PathLike, data: S2DataConfig, model_id: str, check: bool = False
    ) -> torch.Tensor:
        key = ("spec", *_file_key(path), model_id, check)
        hit = self._get(key)
        return hit if hit is not None else self._put(key, reference_spectrogram(path, data, check))

    def speaker_embedding(self, path: str | os.PathLike, data: S2DataConfig, sv: Any, sv_id: str) -> torch.Tensor:
        key = ("sv", *_file_key(path), sv_id, data.sampling_rate)
        hit = self._get(key)
        return hit if hit is not None else self._put(key, reference_speaker_embedding(path, data, sv))

    def tokens(
        self, path: str | os.PathLike, hubert: Any, s2: Any, s2_sampling_rate: int, model_id: str
    ) -> torch.Tensor:
        key = ("tokens", *_file_key(path), model_id)
        hit = self._get(key)
        if hit is not None:
            return hit
        return self._put(key, prompt_tokens(load_reference_16k(path), hubert, s2, s2_sampling_rate))


# ------------------------------------------------------------------------------------ voice prompt cache file
@dataclass(frozen=True)
class StoredPrompt:
    tokens: torch.Tensor  # [Tp] long
    s2_sha256: str
    reference_sha256: str


def write_prompt_cache(voice: Voice, hubert: str | os.PathLike | Any) -> Path:
    """Compute the voice's reference tokens and store them beside its weights.

    `hubert`: a HuBERT model directory, or a featurizer already loaded (`wav16k -> [1, C, T]`).
    """
    from safetensors.torch import save_file

    from gsvkit.audio.features import HubertFeaturizer
    from gsvkit.checkpoint import load_checkpoint, load_s2
    from gsvkit.inference.voice import sha256_file
    from gsvkit.utils.io import atomic_path

    data = load_checkpoint(voice.s2_path).config.data
    s2 = load_s2(voice.s2_path)
    tokens = prompt_tokens(
        load_reference_16k(voice.reference_audio),
        hubert if callable(hubert) else HubertFeaturizer(hubert),
        s2,
        data.sampling_rate,
    )
    meta = {
        "s2_sha256": voice.info.provenance.s2_sha256 or sha256_file(voice.s2_path),
        "reference_sha256": sha256_file(voice.reference_audio),
        "pad_samples": str(pad_samples(data.sampling_rate)),
    }
    with atomic_path(voice.prompt_cache) as tmp:
        save_file({"prompt_tokens": tokens.contiguous()}, str(tmp), metadata=meta)
    return voice.prompt_cache


def read_prompt_cache(voice: Voice) -> torch.Tensor | None:
    """The stored reference tokens if they still match the voice's s2 weights and reference clip, else None."""
    from safetensors import safe_open

    from gsvkit.inference.voice import sha256_file

    path = voice.prompt_cache
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tokens = f.get_tensor("prompt_tokens")
    except Exception:  # a damaged cache is only a cache: fall back to computing the tokens
        return None
    expected_s2 = voice.info.provenance.s2_sha256
    if expected_s2 is None or meta.get("s2_sha256") != expected_s2:
        return None
    if meta.get("reference_sha256") != sha256_file(voice.reference_audio):
        return None
    return tokens.long()


# ---------------------------------------------------------------------- voice speaker-embedding file (v2Pro)
def write_speaker_cache(voice: Voice, sv_path: str | os.PathLike) -> Path:
    """Compute the speaker embedding of the voice's reference and aux clips with `sv_path` and store them."""
    from safetensors.torch import save_file

    from gsvkit.checkpoint import load_speaker_encoder, read_header
    from gsvkit.inference.voice import sha256_file
    from gsvkit.utils.io import atomic_path

    config = read_header(voice.s2_path).config
    model, data = config.model, config.data
    sv = load_speaker_encoder(sv_path)
    if sv.dim != model.sv_dim:
        raise CheckpointError(
            f"{sv_path}: gives {sv.dim}-d speaker embeddings but {voice.s2_path} takes {model.sv_dim}-d ones; "
            "use the speaker-verification model this s2 was trained with"
        )
    tensors, meta = {}, {"sv_sha256": sha256_file(Path(sv_path))}
    for name, clip in _speaker_clips(voice):
        tensors[name] = reference_speaker_embedding(clip, data, sv).contiguous()
        meta[f"{name}_sha256"] = sha256_file(clip)
    with atomic_path(voice.speaker_cache) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return voice.speaker_cache


def read_speaker_cache(voice: Voice) -> dict[Path, torch.Tensor]:
    """The stored embeddings whose clip is unchanged, by clip path (empty when there is no usable file)."""
    from safetensors import safe_open

    from gsvkit.inference.voice import sha256_file

    if not voice.speaker_cache.is_file():
        return {}
    try:
        with safe_open(str(voice.speaker_cache), framework="pt") as f:
            meta = f.metadata() or {}
            stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception:  # a damaged cache is only a cache: the embeddings are computed instead (or refused)
        return {}
    out = {}
    for name, clip in _speaker_clips(voice):
        if name in stored and meta.get(f"{name}_sha256") == sha256_file(clip):
            out[clip.resolve()] = stored[name].float()
    return out


def _speaker_clips(voice: Voice) -> list[tuple[str, Path]]:
    return [("reference", voice.reference_audio)] + [(f"aux{i}", p) for i, p in enumerate(voice.aux_references)]


class SpeakerEmbeddings:
    """Speaker embeddings of reference clips for v2Pro/v2ProPlus: a voice's stored ones, else computed with the
    speaker-verification model (loaded on first need, results kept in the reference cache)."""

    def __init__(self, sv_path: str | os.PathLike | None, cache: ReferenceCache, device: str = "cpu") -> None:
        self.sv_path = Path(sv_path) if sv_path else None
        self.cache = cache
        self.device = device
        self._sv: Any = None
        self._stored: dict[Path, dict[Path, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def _model(self, clip: Path, voice: Voice | None) -> Any:
        with self._lock:
            if self._sv is None:
                sv_path = self.sv_path or (voice.sv_path if voice is not None else None)
                if sv_path is None:
                    where = f"voice {voice.name!r} stores none for it" if voice is not None else "no voice stores it"
                    raise CheckpointError(
                        f"{clip}: a v2Pro/v2ProPlus model needs this reference's speaker embedding and {where}; "
                        "pass the speaker-verification model (sv=PATH, CLI: --sv-model PATH: upstream's "
                        "sv/pretrained_eres2netv2w24s4ep4.ckpt), or recreate the voice with it"
                    )
                from gsvkit.checkpoint import load_speaker_encoder

                self._sv = load_speaker_encoder(sv_path, self.device)
            return self._sv

    def for_clips(self, clips: list[Path], voice: Voice | None, data: S2DataConfig, sv_dim: int) -> list[torch.Tensor]:
        """One [1, sv_dim] embedding per clip, in order."""
        stored: dict[Path, torch.Tensor] = {}
        if voice is not None:
            with self._lock:
                if voice.root not in self._stored:
                    self._stored[voice.root] = read_speaker_cache(voice)
                stored = self._stored[voice.root]
        out = []
        for clip in clips:
            emb = stored.get(Path(clip).resolve())
            if emb is None:
                sv = self._model(Path(clip), voice)
                emb = self.cache.speaker_embedding(clip, data, sv, str(id(sv)))
            if emb.shape[-1] != sv_dim:
                raise CheckpointError(
                    f"{clip}: its speaker embedding has {emb.shape[-1]} values but the s2 model takes {sv_dim}; "
                    "use the speaker-verification model the s2 weights were trained with"
                )
            out.append(emb)
        return out
