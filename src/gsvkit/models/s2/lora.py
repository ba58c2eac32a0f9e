"""LoRA adapters of the v3/v4 flow decoder: upstream's file layout and merging into the base weights.

Upstream fine-tunes v3/v4 with peft on `to_q/to_k/to_v/to_out.0` of every DiT block (rank r, alpha = r) and trains
`ref_enc`, `bridge`, `wns1` and `linear_mel` fully. Its LoRA file (header `03`/`04`, `lora_rank`) holds only the
trained tensors, under peft's names:

    cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q.lora_A.default.weight   [r, in]
    cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q.lora_B.default.weight   [out, r]
    ref_enc.*, bridge.*, wns1.*, linear_mel.*                                            (full tensors)

Merging is peft's formula, W' = W + (alpha / r) B A, done here directly so loading needs no peft.
"""

from __future__ import annotations

import torch

from gsvkit.errors import CheckpointError

__all__ = ["LORA_TARGETS", "is_lora_state_dict", "merge_lora", "plain_key"]

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_PEFT_PREFIX = "base_model.model."


def plain_key(key: str) -> str:
    """peft's wrapped name -> the model's own name (`cfm.base_model.model.x.base_layer.w` -> `cfm.x.w`)."""
    return key.replace(_PEFT_PREFIX, "").replace(".base_layer.", ".")


def is_lora_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(".lora_A." in k for k in state_dict)


def merge_lora(
    base: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], rank: int, alpha: float | None = None
) -> dict[str, torch.Tensor]:
    """Base weights + a LoRA file's weights -> one full state dict (fp32 where merged)."""
    if rank < 1:
        raise CheckpointError(f"lora_rank must be >= 1, got {rank}")
    scale = (alpha if alpha is not None else rank) / rank
    merged = dict(base)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        if ".lora_A." in key or ".lora_B." in key:
            which = "A" if ".lora_A." in key else "B"
            module = plain_key(key.split(f".lora_{which}.")[0])
            pairs.setdefault(module, {})[which] = value
            continue
        name = plain_key(key)
        if name not in base:
            raise CheckpointError(f"LoRA file has {key!r}, which the base model does not have: wrong base file?")
        merged[name] = value
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"LoRA file has only lora_{''.join(ab)} for {module}; both A and B are needed")
        wkey = module + ".weight"
        if wkey not in base:
            raise CheckpointError(f"LoRA adapter for {module!r}, which the base model does not have: wrong base file?")
        a, b = ab["A"].to(torch.float32), ab["B"].to(torch.float32)
        w = base[wkey].to(torch.float32)
        if (b.shape[0], a.shape[1]) != tuple(w.shape) or a.shape[0] != rank or b.shape[1] != rank:
            raise CheckpointError(
                f"LoRA adapter {module}: A {tuple(a.shape)}, B {tuple(b.shape)} do not fit weight {tuple(w.shape)} "
                f"at rank {rank}"
            )
        merged[wkey] = w + scale * (b @ a)
    return merged
