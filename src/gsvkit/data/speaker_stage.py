"""`gsv prepare` stage for v2Pro/v2ProPlus: each clip's speaker embedding -> features/<id>.sv.safetensors.

As upstream's `prepare_datasets/2-get-sv.py`: the clip at its prepared rate (32 kHz for the official models),
resampled to 16 kHz, through the ERes2NetV2 speaker encoder (`gsvkit.models.sv`), stored as [1, sv_dim] fp32 beside
the HuBERT features. Resumable per clip like the other stages: a clip is recomputed only when its audio or the
speaker-verification model changes.
"""

from __future__ import annotations

from typing import Any

import torch

from gsvkit.data.state import digest


def stage_speaker(run: Any, clips: list, prepare_version: int, clip_rate: int) -> list:
    """Embed every clip (run: prepare's `_Run`); clips that fail are dropped with their reason."""
    from gsvkit.audio.io import load_audio, resample
    from gsvkit.data.stages import cached_feature_stage
    from gsvkit.models.sv import SAMPLE_RATE

    sv_hash = run.model_hash(run.cfg.sv)

    def embed(c: Any) -> tuple[dict, dict]:
        wav = resample(load_audio(run.out / "clips" / f"{c.id}.wav"), clip_rate, SAMPLE_RATE)
        emb = run.models.get_sv().embed(torch.from_numpy(wav)[None]).cpu()  # [1, sv_dim]
        return {"sv": emb}, {"dim": int(emb.shape[-1])}

    return cached_feature_stage(run, "sv", clips, lambda c: digest("sv", prepare_version, c.sha, sv_hash, clip_rate),
                                embed)
