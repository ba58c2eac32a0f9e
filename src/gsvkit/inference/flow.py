"""s2 decoding of the flow-matching families (v3/v4): semantic tokens -> mel by flow matching -> vocoder -> audio.

Upstream's `TTS.using_vocoder_synthesis`: the reference's own tokens and transcript phones give the prompt
features (`decode_encp`), the reference clip's normalised mel (24 kHz for v3, 32 kHz for v4) is the prompt mel,
the target's features are decoded in rolling chunks by `sample_steps` Euler steps, the vocoder turns the
de-normalised mel into 24 kHz (v3) or 48 kHz (v4) audio. These families need the reference transcript.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from gsvkit.errors import TextError
from gsvkit.models.vocoders import VOCODER_HOP
from gsvkit.models.vocoders.mel import FLOW_MEL, denorm_mel, flow_mel, norm_mel

__all__ = ["DEFAULT_SAMPLE_STEPS", "decode_flow", "reference_mel", "require_transcript"]

# Upstream's web UI defaults (the API uses 32 for both); v4 was trained for few steps.
DEFAULT_SAMPLE_STEPS = {"v3": 32, "v4": 8}


def require_transcript(version: str, ref_text: str | None) -> None:
    if not (ref_text or "").strip():
        raise TextError(
            f"{version} voices need the reference clip's transcript (ref_text, CLI --ref-text): the flow decoder "
            "continues the reference's mel, so reference-free synthesis is not available for v3/v4"
        )


def reference_mel(path: str | os.PathLike, version: str) -> torch.Tensor:
    """The prompt mel of a reference clip: normalised log-mel [1, 100, T] at the family's mel rate."""
    from gsvkit.inference.reference import _s2_rate_reference

    wav = _s2_rate_reference(path, FLOW_MEL[version], check=False)  # [1, S] at 24/32 kHz
    return norm_mel(flow_mel(wav, version))


@torch.no_grad()
def decode_flow(job, codes: list[int], phone_ids: list[int], gen: torch.Generator) -> np.ndarray:
    """One fragment: semantic tokens (+ its phones) -> float32 audio at the vocoder's rate."""
    bundle, prompt = job.bundle, job.prompt
    s2, vocoder = bundle.s2, bundle.vocoder
    param = next(s2.parameters())
    device, dtype = param.device, param.dtype
    refer = prompt.specs[0].to(device, dtype)
    prompt_codes = prompt.tokens.to(device)[None, None]  # [1, 1, Tp]
    prompt_phones = torch.tensor([prompt.text.phone_ids], dtype=torch.long, device=device)
    fea_ref, ge = s2.decode_encp(prompt_codes, prompt_phones, refer)
    target = torch.tensor([[codes]], dtype=torch.long, device=device)  # [1, 1, N]
    phones = torch.tensor([phone_ids], dtype=torch.long, device=device)
    fea, _ = s2.decode_encp(target, phones, refer, ge, job.params.speed)
    steps = job.params.sample_steps or DEFAULT_SAMPLE_STEPS[bundle.version]

    def noise(shape: tuple[int, ...]) -> torch.Tensor:  # seeded: the same seed gives the same audio
        return torch.randn(shape, generator=gen).to(device, dtype)

    mel = s2.sample_mel(fea_ref, prompt.flow_mel.to(device, dtype), fea, steps, noises=noise)
    wav = vocoder(denorm_mel(mel).to(next(vocoder.parameters()).dtype))  # [1, 1, hop * T]
    return wav[0, 0].float().cpu().numpy()


def samples_per_token(version: str) -> float:
    from gsvkit.models.s2.flow import FRAMES_PER_TOKEN

    return FRAMES_PER_TOKEN[version] * VOCODER_HOP[version]
