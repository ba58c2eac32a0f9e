"""Token sampling for the GPT (s1) decoder, in the order upstream GPT-SoVITS applies it.

Order: repetition penalty (over every previous token, prompt included) → top-p → temperature → top-k →
softmax → one draw by an "exponential race" (`argmax(p / q)`, `q ~ Exp(1)`), which is an exact sample from `p`
and needs no host synchronisation. Draws come from a caller-supplied `torch.Generator`, never the global RNG.

All functions take `logits` of shape `[B, V]` and return new tensors (the input is never modified in place).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def apply_repetition_penalty(
    logits: torch.Tensor, previous_tokens: torch.Tensor | None, penalty: float
) -> torch.Tensor:
    """Penalise every id in `previous_tokens` once: positive scores are divided by `penalty`, negative multiplied.

    logits: [B, V]; previous_tokens: [B, T] ids < V (T may be 0). A repeated id is penalised only once because the
    penalised score is gathered from the unpenalised logits and scattered back (duplicates write the same value).
    """
    if previous_tokens is None or penalty == 1.0 or previous_tokens.shape[-1] == 0:
        return logits
    index = previous_tokens.long().to(logits.device)  # [B, T]
    score = torch.gather(logits, 1, index)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, index, score)


def top_p_filter(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Nucleus filtering: drop ids once the sorted cumulative probability exceeds `top_p` (the best id is kept)."""
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)  # [B, V]
    cum_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove_sorted = cum_probs > top_p
    remove_sorted[:, 0] = False
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Keep the ids scoring at least the k-th best score (ties with it survive); None or k <= 0 keeps all."""
    if top_k is None or top_k <= 0:
        return logits
    k = min(int(top_k), logits.shape[-1])
    pivot = torch.topk(logits, k, dim=-1).values[:, -1:]  # [B, 1]
    return torch.where(logits < pivot, torch.full_like(logits, float("-inf")), logits)


def logits_to_probs(
    logits: torch.Tensor,
    previous_tokens: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Upstream's `logits_to_probs`: [B, V] logits → [B, V] probabilities (penalty → top-p → temperature → top-k)."""
    logits = apply_repetition_penalty(logits, previous_tokens, repetition_penalty)
    logits = top_p_filter(logits, top_p)
    logits = logits / max(float(temperature), 1e-5)
    logits = top_k_filter(logits, top_k)
    return F.softmax(logits, dim=-1)


def sample_from_probs(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One id per row by the exponential race `argmax(p / q)`, q ~ Exp(1): [B, V] → [B, 1] long."""
    q = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return torch.argmax(probs / q, dim=-1, keepdim=True)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A local generator: seeded when `seed` is given, else from OS entropy (the global RNG is left untouched)."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


@dataclass(frozen=True)
class Sampling:
    """The decoding keywords every s1 backend takes (`generate`, `generate_iter`, `decode_steps`), defined once.

    `seed` makes the draws reproducible through a local torch.Generator (or pass your own `generator`); `top_k`
    None/<=0 and `top_p` >= 1 disable those filters; `top_k=1` is greedy.
    """

    top_k: int | None = 15
    top_p: float | None = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    max_new_tokens: int = 1500
    seed: int | None = None
    generator: torch.Generator | None = None

    @property
    def rule(self) -> tuple[int | None, float | None, float, float]:
        """The last arguments of `next_token`: (top_k, top_p, temperature, repetition_penalty)."""
        return self.top_k, self.top_p, self.temperature, self.repetition_penalty

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """`generator` when given, else a local one seeded with `seed`."""
        return self.generator if self.generator is not None else make_generator(self.seed, device)


MIN_NEW_TOKENS = 11  # EOS is out of reach for this many first steps (upstream's rule)


def next_token(
    raw: torch.Tensor,
    history: torch.Tensor,
    step: int,
    eos: int,
    generator: torch.Generator | None,
    top_k: int | None = 15,
    top_p: float | None = 1.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.35,
) -> tuple[int, bool]:
    """The one s1 decoding rule, shared by every backend: raw logits of one step → (token id, sequence ended).

    raw: [1, V] float logits, EOS the last id; history: [1, T] the prompt and every token generated so far.
    EOS is masked for the first `MIN_NEW_TOKENS` steps; the repetition penalty covers the whole history; then
    top-p → temperature → top-k → softmax → one draw from `generator`. The sequence ends when the drawn token or
    the argmax of the penalised logits is EOS (then the token is not part of the output).
    """
    scores = raw[:, :eos] if step < MIN_NEW_TOKENS else raw  # [1, V'] (EOS dropped while masked)
    penalised = apply_repetition_penalty(scores, history, repetition_penalty)
    probs = logits_to_probs(penalised, None, temperature, top_k, top_p, 1.0)
    tok = int(sample_from_probs(probs, generator))
    return tok, tok == eos or int(penalised.argmax(dim=-1)) == eos
