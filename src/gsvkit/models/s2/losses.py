"""s2 training losses (upstream `module/losses.py`): small pure functions, computed in fp32.

The generator objective upstream is `gen + fm + c_mel * mel_l1 + commit + c_kl * kl`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

__all__ = ["discriminator_loss", "feature_loss", "generator_loss", "kl_loss", "mel_loss"]


def feature_loss(fmap_r: Sequence[Sequence[torch.Tensor]], fmap_g: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Feature matching: 2 * sum over discriminators and layers of mean |real - fake| (real detached)."""
    loss = 0.0
    for dr, dg in zip(fmap_r, fmap_g, strict=True):
        for rl, gl in zip(dr, dg, strict=True):
            loss = loss + torch.mean(torch.abs(rl.float().detach() - gl.float()))
    return loss * 2


def discriminator_loss(
    disc_real_outputs: Sequence[torch.Tensor], disc_generated_outputs: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """LSGAN: sum of mean (1 - D(real))^2 + mean D(fake)^2; also the per-discriminator terms (detached)."""
    loss = 0.0
    r_losses, g_losses = [], []
    for dr, dg in zip(disc_real_outputs, disc_generated_outputs, strict=True):
        r_loss = torch.mean((1 - dr.float()) ** 2)
        g_loss = torch.mean(dg.float() ** 2)
        loss = loss + r_loss + g_loss
        r_losses.append(r_loss.detach())
        g_losses.append(g_loss.detach())
    return loss, r_losses, g_losses


def generator_loss(disc_outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """LSGAN generator term: sum of mean (1 - D(fake))^2; also the per-discriminator terms."""
    loss = 0.0
    gen_losses = []
    for dg in disc_outputs:
        term = torch.mean((1 - dg.float()) ** 2)
        gen_losses.append(term)
        loss = loss + term
    return loss, gen_losses


def kl_loss(
    z_p: torch.Tensor, logs_q: torch.Tensor, m_p: torch.Tensor, logs_p: torch.Tensor, z_mask: torch.Tensor
) -> torch.Tensor:
    """KL between the posterior (sampled z_p, logs_q) and the prior N(m_p, exp(logs_p)), averaged over the mask.

    All [B, C, T]; z_mask [B, 1, T].
    """
    z_p, logs_q, m_p, logs_p, z_mask = (t.float() for t in (z_p, logs_q, m_p, logs_p, z_mask))
    kl = logs_p - logs_q - 0.5
    kl = kl + 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask)


def mel_loss(y_mel: torch.Tensor, y_hat_mel: torch.Tensor) -> torch.Tensor:
    """Plain L1 between two log-mel spectrograms [B, n_mels, T] (upstream weights it by c_mel = 45)."""
    return F.l1_loss(y_mel.float(), y_hat_mel.float())
