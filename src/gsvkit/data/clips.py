"""Stage 1 of `gsv prepare`: one recording in, normalised clips out (`clips/<id>.wav`).

A recording with a transcript becomes one clip; one without is cut on silence (`Slicer`) and long pieces are cut
again at their quietest point. Clips are resampled to the s2 rate, optionally denoised, level-normalised as
upstream does (or to a LUFS target), and written as 16-bit wav. The work function takes and returns plain data so
it can run in a worker process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsvkit import limits
from gsvkit.audio.io import load_audio, normalize_loudness, peak_mix, save_audio
from gsvkit.audio.slicer import Slicer, split_long
from gsvkit.errors import AudioError
from gsvkit.utils.io import sha256_file

# upstream's two peak mixes: after slicing (tools/slice_audio.py) and before features (2-get-hubert-wav32k.py)
SLICE_MIX = (0.9, 0.25)
FEATURE_MIX = (0.95, 0.5)


@dataclass(frozen=True)
class ClipJob:
    """Everything needed to cut one recording (picklable)."""

    path: str
    name: str
    whole: bool  # True: the recording has a transcript and stays one clip
    sr: int
    clips_dir: str
    slicer: dict
    max_length: float
    min_duration: float
    max_duration: float
    loudness: str
    target_lufs: float
    denoise: bool
    text_chars: int = 0  # length of the transcript (whole recordings), checked against the clip's duration


def _normalise(wav: np.ndarray, job: ClipJob, sliced: bool) -> np.ndarray:
    if job.loudness == "lufs":
        return normalize_loudness(wav, job.sr, job.target_lufs)
    if sliced:
        wav = peak_mix(wav, *SLICE_MIX)
    return peak_mix(wav, *FEATURE_MIX)


def _denoise(wav: np.ndarray, sr: int) -> np.ndarray:
    try:
        import noisereduce
    except ImportError:
        raise AudioError("--denoise needs the noisereduce package: pip install noisereduce") from None
    return np.asarray(noisereduce.reduce_noise(y=wav, sr=sr), dtype=np.float32)


def cut_recording(job: ClipJob) -> dict:
    """Cut one recording: {"clips": [{id, start, end, duration, sha}], "dropped": [{where, reason}]}.

    Problems with the recording (unreadable, silent, too short or long) are returned as dropped entries, never
    raised, so one bad file cannot stop the run.
    """
    try:
        return _cut(job)
    except AudioError as err:
        return {"clips": [], "dropped": [{"where": job.path, "reason": str(err)}]}
    except Exception as err:  # a decoder or resampler failure on one file must not stop the run
        return {"clips": [], "dropped": [{"where": job.path, "reason": f"{type(err).__name__}: {err}"}]}


def _cut(job: ClipJob) -> dict:
    where = job.path
    try:
        wav = load_audio(job.path, job.sr)  # [S] float32 mono at the clip rate
    except AudioError as err:
        return {"clips": [], "dropped": [{"where": where, "reason": str(err).split(": ", 1)[-1]}]}
    slicer = Slicer(job.sr, **job.slicer)
    loud = slicer.rms(wav) >= 10.0 ** (slicer.threshold / 20.0)
    if not np.any(wav):
        return {"clips": [], "dropped": [{"where": where, "reason": "empty: every sample is zero"}]}
    if not loud.any():
        reason = f"silent: no part is louder than {slicer.threshold:g} dB"
        return {"clips": [], "dropped": [{"where": where, "reason": reason}]}

    total = wav.shape[0] / job.sr
    if job.whole:
        if total > job.max_duration:
            reason = (
                f"too long for one transcript ({total:.1f} s > {job.max_duration:g} s); split the recording, or "
                "remove its transcript so it is sliced and transcribed"
            )
            return {"clips": [], "dropped": [{"where": where, "reason": reason}]}
        if job.text_chars > limits.MAX_CHARS_PER_SECOND * max(total, 0.1):
            reason = (
                f"transcript of {job.text_chars:,} characters for {total:.1f} s of audio (over "
                f"MAX_CHARS_PER_SECOND={limits.MAX_CHARS_PER_SECOND:g}); check that it belongs to this recording"
            )
            return {"clips": [], "dropped": [{"where": where, "reason": reason}]}
        bounds = [(0, wav.shape[0])]
    else:
        bounds = split_long(wav, job.sr, slicer.slice(wav), job.max_length, slicer.hop_size)

    clips, dropped = [], []
    for start, end in bounds:
        clip_id = job.name if job.whole else f"{job.name}_{start:010d}_{end:010d}"
        span = f"{where} [{start / job.sr:.2f}-{end / job.sr:.2f} s]"
        duration = (end - start) / job.sr
        if duration < job.min_duration:
            dropped.append({"where": span, "reason": f"too short ({duration:.2f} s < {job.min_duration:g} s)"})
            continue
        piece = wav[start:end]
        if not (slicer.rms(piece) >= 10.0 ** (slicer.threshold / 20.0)).any():
            dropped.append({"where": span, "reason": f"silent: no part is louder than {slicer.threshold:g} dB"})
            continue
        if job.denoise:
            piece = _denoise(piece, job.sr)
        piece = _normalise(piece, job, sliced=not job.whole)
        out = Path(job.clips_dir) / f"{clip_id}.wav"
        save_audio(out, piece, job.sr)
        clips.append(
            {
                "id": clip_id,
                "start": round(start / job.sr, 4),
                "end": round(end / job.sr, 4),
                "duration": round(duration, 4),
                "sha": sha256_file(out),
            }
        )
    if not clips and not dropped:
        dropped.append({"where": where, "reason": "no speech found by the slicer"})
    return {"clips": clips, "dropped": dropped}
