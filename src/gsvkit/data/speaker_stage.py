"""`gsv prepare` stage for v2Pro/v2ProPlus: each clip's speaker embedding -> features/<id>.sv.safetensors.

As upstream's `prepare_datasets/2-get-sv.py`: the clip at its prepared rate (32 kHz for the official models),
resampled to 16 kHz, through the ERes2NetV2 speaker encoder (`gsvkit.models.sv`), stored as [1, sv_dim] fp32 beside
the HuBERT features. Resumable per clip like the other stages: a clip is recomputed only when its audio or the
speaker-verification model changes.
"""

from __future__ import annotations

from typing import Any

import torch

from gsvkit.data.state import StageState, digest


def stage_speaker(run: Any, clips: list, prepare_version: int, clip_rate: int) -> list:
    """Embed every clip (run: prepare's `_Run`); clips that fail are dropped with their reason."""
    from gsvkit.audio.io import load_audio, resample
    from gsvkit.data.stages import drop_reason, save_tensors
    from gsvkit.models.sv import SAMPLE_RATE

    state = StageState(run.out, "sv")
    feats = run.out / "features"
    sv_hash = run.model_hash(run.cfg.sv)
    todo = []
    for c in clips:
        key = digest("sv", prepare_version, c.sha, sv_hash, clip_rate)
        if state.get(c.id, key) is not None and (feats / f"{c.id}.sv.safetensors").is_file():
            run.report.reused["sv"] += 1
        else:
            todo.append((c, key))
    failed: set[str] = set()
    with run.bar("sv", len(todo)) as advance:
        for c, key in todo:
            try:
                sv = run.models.get_sv()
                wav = resample(load_audio(run.out / "clips" / f"{c.id}.wav"), clip_rate, SAMPLE_RATE)
                emb = sv.embed(torch.from_numpy(wav)[None]).cpu()  # [1, sv_dim]
                save_tensors(feats / f"{c.id}.sv.safetensors", {"sv": emb})
                state.put(c.id, key, {"dim": int(emb.shape[-1])})
                run.report.computed["sv"] += 1
            except Exception as err:
                run.drop(c.where(), "sv", drop_reason(err))
                failed.add(c.id)
            advance()
    kept = [c for c in clips if c.id not in failed]
    state.prune({c.id for c in kept})
    return kept
