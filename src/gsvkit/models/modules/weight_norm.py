"""Weight normalisation in the old `torch.nn.utils.weight_norm` form: parameters `weight_g` and `weight_v`.

Official GPT-SoVITS weight files store weight-normed layers as `<name>.weight_g` / `<name>.weight_v` (dim 0), so
our layers must carry exactly those parameters. The effective weight is `g * v / ||v||`, the norm running over
every dim except 0 (for ConvTranspose1d `v` is [in, out, k] and `g` is [in, 1, 1]).

torch's own helper still exists but is deprecated; this is the same idea in a few lines, plus a cache: with
autograd off (inference) the folded weight is computed once and reused until `g` or `v` change (their version
counters move on every in-place update: `load_state_dict`, optimiser steps).
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

__all__ = ["fold_weight_norm", "has_weight_norm", "recompute_weight_norm", "remove_weight_norm", "weight_norm"]


M = TypeVar("M", bound=nn.Module)


def _norm_except_dim0(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)


class _WeightNormHook:
    def __init__(self, name: str) -> None:
        self.name = name
        self._cache_key: tuple | None = None
        self._cache: torch.Tensor | None = None

    def compute(self, module: nn.Module) -> torch.Tensor:
        g = getattr(module, self.name + "_g")
        v = getattr(module, self.name + "_v")
        return v * (g / _norm_except_dim0(v))

    def __call__(self, module: nn.Module, inputs) -> None:
        g = getattr(module, self.name + "_g")
        v = getattr(module, self.name + "_v")
        if torch.is_grad_enabled() or g.is_inference() or v.is_inference():
            # Autograd needs the graph; inference tensors (made in inference mode) have no version counter.
            self._cache_key = self._cache = None
            setattr(module, self.name, self.compute(module))
            return
        key = (g._version, v._version, g.data_ptr(), v.data_ptr(), g.dtype, v.device)
        if key != self._cache_key:
            self._cache = self.compute(module)
            self._cache_key = key
        setattr(module, self.name, self._cache)


def weight_norm(module: M, name: str = "weight") -> M:
    """Replace `module.<name>` by `<name>_g` [out, 1, ...] and `<name>_v` (same shape as the weight); dim 0."""
    weight = getattr(module, name)
    del module._parameters[name]
    module.register_parameter(name + "_g", nn.Parameter(_norm_except_dim0(weight.detach()).clone()))
    module.register_parameter(name + "_v", nn.Parameter(weight.detach().clone()))
    hook = _WeightNormHook(name)
    setattr(module, name, hook.compute(module).detach())
    module.register_forward_pre_hook(hook)
    return module


def _find_hook(module: nn.Module, name: str):
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, _WeightNormHook) and hook.name == name:
            return key, hook
    return None, None


def has_weight_norm(module: nn.Module, name: str = "weight") -> bool:
    return _find_hook(module, name)[0] is not None


def remove_weight_norm(module: M, name: str = "weight") -> M:
    """Fold `g * v / ||v||` into a plain `<name>` parameter (state-dict keys change to upstream's folded form)."""
    key, hook = _find_hook(module, name)
    if key is None:
        raise ValueError(f"weight_norm of '{name}' not found in {module}")
    with torch.no_grad():
        weight = hook.compute(module)
    del module._forward_pre_hooks[key]
    delattr(module, name)
    del module._parameters[name + "_g"]
    del module._parameters[name + "_v"]
    module.register_parameter(name, nn.Parameter(weight.detach().clone()))
    return module


def fold_weight_norm(model: M) -> M:
    """`remove_weight_norm` on every weight-normed parameter of every submodule; returns `model`."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, _WeightNormHook):
                remove_weight_norm(module, hook.name)
    return model


@torch.no_grad()
def recompute_weight_norm(model: nn.Module) -> None:
    """Refresh every weight-normed `<name>` attribute from its g/v (e.g. after loading with `assign=True`)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, _WeightNormHook):
                hook(module, ())
