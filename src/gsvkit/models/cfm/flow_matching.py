"""Conditional flow matching over mels (upstream `module/models.py::CFM` and the v3/v4 chunked driver).

Sampling is Euler from noise x_0 ~ N(0, 1) at t = 0 to the mel at t = 1 over `steps` equal steps of size
d = 1/steps; the reference mel is the prompt: it is given as `cond` and its frames are zeroed in x after every
step. Classifier-free guidance is off (upstream's inference_cfg_rate = 0), so one estimator call per step.

Long outputs are decoded in rolling chunks: each chunk is [prompt features | next features], T_chunk frames in
all, and the last prompt-length frames of a chunk's output become the next chunk's prompt (v3 468/934,
v4 500/1000 frames).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gsvkit.models.cfm.dit import DiT

__all__ = ["CFM", "CHUNKS", "ChunkSizes", "decode_chunked"]

# Noise for one sampling call: a tensor [B, mel, T], or a function of the shape (e.g. seeded draws).
Noise = torch.Tensor | Callable[[tuple[int, ...]], torch.Tensor]


@dataclass(frozen=True)
class ChunkSizes:
    max_prompt: int  # frames of the reference mel kept as a prompt (upstream T_ref)
    chunk: int  # frames per estimator window, prompt included (T_chunk)


CHUNKS = {"v3": ChunkSizes(468, 934), "v4": ChunkSizes(500, 1000)}


class CFM(nn.Module):
    def __init__(self, in_channels: int, estimator: DiT) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.estimator = estimator

    @torch.no_grad()
    def sample(
        self,
        mu: torch.Tensor,
        x_lens: torch.Tensor,
        prompt: torch.Tensor,
        steps: int,
        noise: Noise | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """mu (features) [B, C, T], prompt mel [B, mel, P] -> mel [B, mel, T] (prompt frames zero).

        `noise` is the initial x_0 [B, mel, T] (or a function giving it); None draws torch.randn.
        """
        if steps < 1:
            raise ValueError(f"steps: expected >= 1, got {steps}")
        b, t_len = mu.size(0), mu.size(2)
        shape = (b, self.in_channels, t_len)
        if noise is None:
            x = torch.randn(shape, device=mu.device, dtype=mu.dtype)
        else:
            x = noise(shape) if callable(noise) else noise
            if tuple(x.shape) != shape:
                raise ValueError(f"noise: expected shape {shape}, got {tuple(x.shape)}")
            x = x.to(device=mu.device, dtype=mu.dtype)
        x = x * temperature
        p = prompt.size(-1)
        cond = torch.zeros_like(x)
        cond[..., :p] = prompt[..., :p]
        x[..., :p] = 0
        d = 1.0 / steps
        d_vec = torch.full((b,), d, device=mu.device, dtype=mu.dtype)
        est = self.estimator
        text_embed, d_emb = est.condition(mu), est.step_embedding(d_vec)  # constant over the steps
        t = 0.0
        for _ in range(steps):
            t_vec = torch.full((b,), t, device=mu.device, dtype=mu.dtype)
            v = est(x, cond, x_lens, t_vec, d_vec, text_embed=text_embed, d_emb=d_emb).transpose(1, 2)
            x = x + d * v
            t += d  # accumulated as upstream does (not j * d): the same float times
            x[..., :p] = 0
        return x

    def loss(
        self,
        x1: torch.Tensor,
        x_lens: torch.Tensor,
        prompt_lens: torch.Tensor,
        mu: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Velocity MSE: x1 (target mel) [B, mel, T], mu [B, C, T]; prompt frames are given and not scored.

        Plain flow matching (d = 0), the objective of upstream's LoRA fine-tuning without its 30 % shortcut
        (self-distilled larger step) batches.
        """
        b = x1.size(0)
        dev = x1.device
        t = torch.rand((b,), generator=generator, device=dev).to(x1.dtype)
        x0 = torch.randn(x1.shape, generator=generator, device=dev).to(x1.dtype)
        vt = x1 - x0
        xt = x0 + t[:, None, None] * vt
        frames = torch.arange(x1.size(-1), device=dev)
        in_prompt = (frames[None, :] < prompt_lens[:, None]).unsqueeze(1)  # [B, 1, T]
        prompt = torch.where(in_prompt, x1, torch.zeros_like(x1))
        xt = torch.where(in_prompt, torch.zeros_like(xt), xt)
        v = self.estimator(xt, prompt, x_lens, t, torch.zeros_like(t), mu).transpose(1, 2)
        total = x1.new_zeros(())
        for i in range(b):
            lo, hi = int(prompt_lens[i]), int(x_lens[i])
            total = total + torch.mean((v[i, :, lo:hi] - vt[i, :, lo:hi]) ** 2)
        return total / b


@torch.no_grad()
def decode_chunked(
    cfm: CFM,
    fea_ref: torch.Tensor,
    mel_ref: torch.Tensor,
    fea_todo: torch.Tensor,
    sizes: ChunkSizes,
    steps: int,
    noises: Sequence[Noise] | Noise | None = None,
) -> torch.Tensor:
    """Reference features [1, C, Tr] + its (normalised) mel [1, mel, Tm] + target features [1, C, T] -> mel [1, mel, T].

    The prompt is the common length of fea_ref and mel_ref, at most `sizes.max_prompt` frames (the last ones).
    `noises`: one initial noise per chunk (a list), one function for all, or None (torch.randn).
    """
    t_min = min(mel_ref.size(2), fea_ref.size(2))
    mel_ref, fea_ref = mel_ref[:, :, :t_min], fea_ref[:, :, :t_min]
    if t_min > sizes.max_prompt:
        mel_ref, fea_ref = mel_ref[:, :, -sizes.max_prompt :], fea_ref[:, :, -sizes.max_prompt :]
        t_min = sizes.max_prompt
    step = sizes.chunk - t_min
    outs: list[torch.Tensor] = []
    for k, start in enumerate(range(0, fea_todo.size(2), step)):
        todo = fea_todo[:, :, start : start + step]
        fea = torch.cat([fea_ref, todo], dim=2)  # [1, C, t_min + chunk]
        noise = noises[k] if isinstance(noises, Sequence) else noises
        lens = torch.tensor([fea.size(2)], device=fea.device)
        mel = cfm.sample(fea, lens, mel_ref, steps, noise=noise)[:, :, mel_ref.size(2) :]
        # The tail prompts the next chunk (written without -t_min, which would keep everything when t_min is 0).
        mel_ref, fea_ref = mel[:, :, mel.size(2) - t_min :], todo[:, :, todo.size(2) - t_min :]
        outs.append(mel)
    return torch.cat(outs, dim=2)
