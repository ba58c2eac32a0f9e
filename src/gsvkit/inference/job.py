"""One synthesis call's fixed inputs (`Job`) and the two model steps on a fragment: s1 tokens, s2 audio."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from gsvkit.inference.bundle import ModelBundle
from gsvkit.inference.params import SynthesisParams
from gsvkit.inference.prompt import Prompt
from gsvkit.inference.textprep import TextFeatures, TextReader
from gsvkit.models.s1.gpt import Text2SemanticDecoder
from gsvkit.models.s1.sampling import Sampling


@dataclass(frozen=True)
class Job:
    """Taken once at the start of a call, so a model switch during it changes nothing it uses."""

    bundle: ModelBundle
    reader: TextReader
    prompt: Prompt
    params: SynthesisParams
    seed: int
    audit: dict[str, Any] = field(default_factory=dict)  # what the audit line says about the request


def generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """The s1 and s2 random streams of one seed."""
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed((seed + 1) % 2**64)


def s1_inputs(job: Job, frag: TextFeatures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Prompt text + fragment as s1 sees them: phone ids [1, Tx], BERT [1, 1024, Tx], prompt tokens [1, Tp]."""
    pt = job.prompt.text
    ids = (pt.phone_ids if pt else []) + frag.phone_ids
    bert = torch.cat([pt.bert, frag.bert], dim=1) if pt else frag.bert  # [1024, Tx]
    phones = torch.tensor([ids], dtype=torch.long)  # [1, Tx]
    prompt = job.prompt.tokens[None] if job.prompt.tokens is not None else None  # [1, Tp]
    return phones, bert[None], prompt


def _rule(job: Job) -> dict[str, Any]:
    return {f.name: getattr(job.params, f.name) for f in fields(Sampling) if f.name not in ("seed", "generator")}


def generate_tokens(job: Job, frag: TextFeatures, gen: torch.Generator) -> Iterator[int]:
    """s1: the fragment's semantic tokens, one at a time."""
    phones, bert, prompt = s1_inputs(job, frag)
    return job.bundle.s1.generate_iter(phones, bert, prompt, **_rule(job), generator=gen)


def generate_batch_tokens(job: Job, frags: list[TextFeatures], gen: torch.Generator) -> list[list[int]]:
    """s1: the semantic tokens of several fragments, decoded together as one batch by the torch model (B rows per
    step cost little more than one on a CPU). The ONNX graphs decode one row, so there the fragments go one by one;
    so does a single fragment (then the draws are those of `generate_tokens`)."""
    s1 = job.bundle.s1
    if len(frags) == 1 or not isinstance(s1, Text2SemanticDecoder):
        return [list(generate_tokens(job, f, gen)) for f in frags]
    rows = [s1_inputs(job, f) for f in frags]
    prompt = rows[0][2]
    return s1.generate_batch([r[0][0] for r in rows], [r[1][0] for r in rows], prompt, **_rule(job), generator=gen)


def decode_tokens(job: Job, codes: list[int], phone_ids: list[int], gen: torch.Generator) -> np.ndarray:
    """s2: semantic tokens (+ the fragment's phones) -> float32 audio [S] in the reference's timbre."""
    if not codes:
        return np.zeros(0, np.float32)
    if job.bundle.is_flow:
        from gsvkit.inference.flow import decode_flow

        return decode_flow(job, codes, phone_ids, gen)
    device = model_device(job.bundle.s2)
    wav = job.bundle.s2.decode(
        torch.tensor([[codes]], dtype=torch.long, device=device),  # [1, 1, N]
        torch.tensor([phone_ids], dtype=torch.long, device=device),  # [1, L]
        [s.to(device) for s in job.prompt.specs],
        noise_scale=job.params.noise_scale,
        speed=job.params.speed,
        generator=gen,
        sv_emb=[e.to(device) for e in job.prompt.sv_embs] if job.prompt.sv_embs is not None else None,
    )  # [1, 1, S]
    return wav[0, 0].float().cpu().numpy()


def model_device(model: Any) -> torch.device:
    """Where a torch module (or an onnxruntime stand-in with a `device` attribute) wants its inputs."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device
