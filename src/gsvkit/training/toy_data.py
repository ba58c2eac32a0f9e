"""A small synthetic dataset written directly in the prepared-dataset format (`gsvkit.data.manifest`).

Used by the tests, the training benchmark and `gsv demo` when no real features can be extracted. The clips are
learnable on purpose: each "phone" is a harmonic tone whose pitch and spectral tilt depend on the phone id and
the speaker, the SSL features are a fixed random projection of the log spectrum of each frame (so they carry the
content), and the semantic tokens are a fixed random hash of pairs of SSL frames (so they follow the content).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from gsvkit.config import S2Config
from gsvkit.data.manifest import Utterance, write_manifest
from gsvkit.utils.io import atomic_write_text

PHONE_POOL = 40  # distinct phone ids used (ids 1..PHONE_POOL, valid in both the v1 and v2 tables)


def _speaker_f0(index: int) -> float:
    return 110.0 * (1.35**index)


def synth_clip(
    phone_ids: list[int], durations: list[int], f0: float, sr: int, frame: int, rng: np.random.Generator
) -> np.ndarray:
    """A harmonic waveform: each phone holds `durations[i]` frames of `frame` samples."""
    pieces = []
    phase = 0.0
    for pid, dur in zip(phone_ids, durations, strict=True):
        n = dur * frame
        pitch = f0 * (1.0 + 0.5 * ((pid * 7) % 11) / 11.0)
        tilt = 0.4 + 0.5 * ((pid * 5) % 9) / 9.0  # harmonic amplitude decay per phone
        t = np.arange(n) / sr
        inst = phase + 2 * np.pi * pitch * t
        wave = np.zeros(n)
        for h in range(1, 9):
            if pitch * h >= sr / 2 * 0.9:
                break
            wave += (tilt**h) * np.sin(h * inst)
        phase = float(inst[-1] + 2 * np.pi * pitch / sr) if n else phase
        env = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / max(1, frame))  # soft phone edges
        pieces.append(wave * env)
    wav = np.concatenate(pieces) if pieces else np.zeros(frame)
    wav = wav / (np.abs(wav).max() + 1e-6) * 0.5 + rng.normal(0, 0.003, wav.shape)
    return wav.astype(np.float32)


def make_toy_dataset(
    root: str | Path,
    cfg: S2Config,
    n_utts: int = 12,
    n_speakers: int = 1,
    seconds: tuple[float, float] = (0.8, 1.6),
    val_per_speaker: int = 2,
    seed: int = 0,
    language: str = "en",
) -> Path:
    """Write a synthetic dataset for `cfg` (sampling rate, hop, ssl_dim, codebook) into `root`; returns root."""
    from gsvkit.audio.io import save_audio
    from gsvkit.audio.spectrogram import spectrogram

    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    (root / "features").mkdir(parents=True, exist_ok=True)
    sr, hop = cfg.data.sampling_rate, cfg.data.hop_length
    frame = 2 * hop  # one semantic token
    rng = np.random.default_rng(seed)
    proj_gen = torch.Generator().manual_seed(seed + 1)
    bins = cfg.data.filter_length // 2 + 1
    ssl_proj = torch.randn(cfg.model.ssl_dim, bins, generator=proj_gen) / math.sqrt(bins)  # [C, bins]
    code_proj = torch.randn(cfg.model.codebook_size, 2 * cfg.model.ssl_dim, generator=proj_gen)  # [K, 2C]

    utts: list[Utterance] = []
    per_speaker = max(1, n_utts // n_speakers)
    for s in range(n_speakers):
        speaker = f"spk{s}"
        for i in range(per_speaker):
            uid = f"{speaker}_{i:04d}"
            total_frames = int(rng.uniform(*seconds) * sr / frame)
            phone_ids: list[int] = []
            durations: list[int] = []
            while sum(durations) < total_frames:
                phone_ids.append(int(rng.integers(1, PHONE_POOL + 1)))
                durations.append(int(rng.integers(2, 6)))
            wav = synth_clip(phone_ids, durations, _speaker_f0(s), sr, frame, rng)
            save_audio(root / "clips" / f"{uid}.wav", wav, sr)
            spec = spectrogram(torch.from_numpy(wav)[None], cfg.data)[0]  # [bins, F]
            ssl = torch.tanh(ssl_proj @ torch.log(spec + 1e-4) / 4)  # [C, F] content-bearing features
            f = ssl.shape[-1] // 2 * 2
            pairs = ssl[:, :f].reshape(ssl.shape[0], -1, 2).permute(1, 0, 2).reshape(f // 2, -1)  # [F/2, 2C]
            codes = ((pairs - pairs.mean(0)) @ code_proj.T).argmax(-1).long()  # [F/2]
            save_file({"ssl": ssl.contiguous()}, str(root / "features" / f"{uid}.hubert.safetensors"))
            save_file({"codes": codes.contiguous()}, str(root / "features" / f"{uid}.semantic.safetensors"))
            utts.append(
                Utterance(
                    id=uid, speaker=speaker, language=language, text=" ".join(f"p{p}" for p in phone_ids),
                    norm_text=" ".join(f"p{p}" for p in phone_ids), phones=[f"p{p}" for p in phone_ids],
                    phone_ids=phone_ids, duration=len(wav) / sr,
                    split="val" if i >= per_speaker - val_per_speaker else "train",
                    clip=f"clips/{uid}.wav", source=f"synthetic:{speaker}",
                )
            )
    write_manifest(root, utts)
    atomic_write_text(
        root / "prepare.json",
        json.dumps({"generator": "gsvkit.training.toy_data", "seed": seed, "sampling_rate": sr, "hop": hop}),
    )
    return root
