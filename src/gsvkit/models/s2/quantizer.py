"""Residual vector quantiser with an EMA codebook (upstream `module/quantize.py` + `core_vq.py`, from EnCodec).

s2 uses one quantiser (n_q=1) of 1024 codes over 768-d projected HuBERT frames. Module and buffer names
(`vq.layers.0._codebook.{inited,cluster_size,embed,embed_avg}`) match the official weight files.

Training behaviour (as upstream): a codebook that is not `inited` is set by k-means on the first batch; in train
mode the codebook follows an EMA of its assigned vectors, dead codes (EMA count < 2) are replaced by random
batch vectors, the output is straight-through and the commitment loss is `mse(quantized.detach(), x)`.
In eval mode the lookup is plain and the commitment loss is 0.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["EuclideanCodebook", "ResidualVectorQuantizer", "VectorQuantization"]


def _ema_inplace(moving_avg: torch.Tensor, new: torch.Tensor, decay: float) -> None:
    moving_avg.mul_(decay).add_(new, alpha=1 - decay)


def _laplace_smoothing(x: torch.Tensor, n_categories: int, epsilon: float = 1e-5) -> torch.Tensor:
    return (x + epsilon) / (x.sum() + n_categories * epsilon)


def _sample_vectors(samples: torch.Tensor, num: int) -> torch.Tensor:
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device)
    return samples[idx]


def _kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain k-means on at most 500 samples [N, D] -> (means [K, D], counts [K])."""
    samples = samples[:500]
    means = _sample_vectors(samples, num_clusters)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        dists = -torch.cdist(samples, means).pow(2)  # [N, K]
        buckets = dists.max(dim=-1).indices
        bins = torch.bincount(buckets, minlength=num_clusters)
        zero = bins == 0
        new_means = torch.zeros(num_clusters, samples.shape[1], dtype=samples.dtype, device=samples.device)
        new_means.scatter_add_(0, buckets.unsqueeze(1).expand(-1, samples.shape[1]), samples)
        new_means = new_means / bins.masked_fill(zero, 1).unsqueeze(1)
        means = torch.where(zero.unsqueeze(1), means, new_means)
    return means, bins


class EuclideanCodebook(nn.Module):
    """Codebook [K, D] searched by Euclidean distance, updated by EMA (buffers, not parameters)."""

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        threshold_ema_dead_code: int = 2,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_ema_dead_code = threshold_ema_dead_code
        embed = torch.zeros(codebook_size, dim)
        if not kmeans_init:
            nn.init.kaiming_uniform_(embed)
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    @torch.no_grad()
    def _init_embed(self, data: torch.Tensor) -> None:
        if bool(self.inited):
            return
        embed, cluster_size = _kmeans(data, self.codebook_size, self.kmeans_iters)
        self.embed.copy_(embed)
        self.embed_avg.copy_(embed)
        self.cluster_size.copy_(cluster_size)
        self.inited.fill_(1.0)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, D] -> nearest code index [N] (argmax of -(|x|^2 - 2 x.E + |E|^2), as upstream)."""
        embed = self.embed.t()  # [D, K]
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> indices [...]."""
        return self.quantize(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1])

    def decode(self, embed_ind: torch.Tensor) -> torch.Tensor:
        return F.embedding(embed_ind, self.embed)

    @torch.no_grad()
    def _expire_codes(self, samples: torch.Tensor) -> None:
        if self.threshold_ema_dead_code == 0:
            return
        expired = self.cluster_size < self.threshold_ema_dead_code
        if not torch.any(expired):
            return
        replaced = torch.where(expired.unsqueeze(1), _sample_vectors(samples, self.codebook_size), self.embed)
        self.embed.copy_(replaced)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D] -> (quantized [B, T, D], indices [B, T]); updates the EMA codebook in train mode."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, D]
        self._init_embed(flat.detach())
        embed_ind = self.quantize(flat)
        quantize = self.decode(embed_ind.view(*shape[:-1]))
        if self.training:
            with torch.no_grad():
                flat = flat.detach()
                onehot = F.one_hot(embed_ind, self.codebook_size).to(flat.dtype)  # [N, K]
                self._expire_codes(flat)
                _ema_inplace(self.cluster_size, onehot.sum(0), self.decay)
                _ema_inplace(self.embed_avg, (flat.t() @ onehot).t(), self.decay)
                smoothed = _laplace_smoothing(self.cluster_size, self.codebook_size, self.epsilon)
                self.embed.copy_(self.embed_avg / (smoothed * self.cluster_size.sum()).unsqueeze(1))
        return quantize, embed_ind.view(*shape[:-1])


class VectorQuantization(nn.Module):
    """One quantiser on [B, D, T] tensors (codebook dim == input dim, so no projections)."""

    def __init__(self, dim: int, codebook_size: int, commitment_weight: float = 1.0, **codebook_kwargs) -> None:
        super().__init__()
        self.commitment_weight = commitment_weight
        self._codebook = EuclideanCodebook(dim, codebook_size, **codebook_kwargs)

    @property
    def codebook(self) -> torch.Tensor:
        return self._codebook.embed

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._codebook.encode(x.transpose(1, 2))  # [B, T]

    def decode(self, embed_ind: torch.Tensor) -> torch.Tensor:
        return self._codebook.decode(embed_ind).transpose(1, 2)  # [B, D, T]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.transpose(1, 2)  # [B, T, D]
        quantize, embed_ind = self._codebook(x)
        loss = torch.zeros(1, device=x.device, dtype=x.dtype)
        if self.training:
            quantize = x + (quantize - x).detach()  # straight-through
            if self.commitment_weight > 0:
                loss = loss + F.mse_loss(quantize.detach(), x) * self.commitment_weight
        return quantize.transpose(1, 2), embed_ind, loss


class ResidualVectorQuantization(nn.Module):
    def __init__(self, num_quantizers: int, **kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList([VectorQuantization(**kwargs) for _ in range(num_quantizers)])


class ResidualVectorQuantizer(nn.Module):
    """RVQ over [B, D, T]: each layer quantises what the previous ones left over."""

    def __init__(
        self,
        dimension: int = 768,
        n_q: int = 1,
        bins: int = 1024,
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        threshold_ema_dead_code: int = 2,
    ) -> None:
        super().__init__()
        self.n_q = n_q
        self.vq = ResidualVectorQuantization(
            num_quantizers=n_q,
            dim=dimension,
            codebook_size=bins,
            decay=decay,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
        )

    def forward(self, x: torch.Tensor, n_q: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, D, T] -> (quantized [B, D, T], codes [n_q, B, T], mean commitment loss (scalar))."""
        residual = x
        quantized_out = torch.zeros_like(x)
        codes, losses = [], []
        for layer in self.vq.layers[: n_q or self.n_q]:
            quantized, indices, loss = layer(residual)
            residual = residual - quantized
            quantized_out = quantized_out + quantized
            codes.append(indices)
            losses.append(loss)
        return quantized_out, torch.stack(codes), torch.mean(torch.stack(losses))

    @torch.no_grad()
    def kmeans_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set every codebook by k-means on frames x [N, D] (the residuals of the layers before it).

        Upstream's s2 pretraining sets the codebook this way from its first batch; a model built from scratch
        whose quantiser is frozen never gets that batch, and would map every frame to code 0.
        """
        residual = x[torch.randperm(x.shape[0], generator=generator)]  # _kmeans looks at the first 500 only
        for layer in self.vq.layers[: self.n_q]:
            book = layer._codebook
            book.inited.fill_(0.0)
            book._init_embed(residual)
            residual = residual - book.decode(book.quantize(residual))

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """x [B, D, T] -> codes [n_q, B, T] (pure lookup: no codebook update)."""
        residual = x
        codes = []
        for layer in self.vq.layers[: n_q or self.n_q]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices)
            codes.append(indices)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [n_q, B, T] -> sum of the looked-up vectors [B, D, T]."""
        out = None
        for layer, indices in zip(self.vq.layers, codes, strict=False):
            q = layer.decode(indices)
            out = q if out is None else out + q
        return out
