"""Weight-only int8 linear layers for CPU inference: torch's dynamic int8 `Linear` (fbgemm), built in one place."""

from __future__ import annotations

import warnings

from torch import nn


def int8_linear(linear: nn.Linear) -> nn.Module:
    """`linear` as torch's dynamic int8 layer: int8 weights with per-channel scales, activations scaled per call
    (fp32 in, fp32 out). `linear` itself is left as it was."""
    from torch.ao.nn.quantized import dynamic as nnqd
    from torch.ao.quantization import per_channel_dynamic_qconfig

    linear.qconfig = per_channel_dynamic_qconfig  # type: ignore[assignment]
    with warnings.catch_warnings():
        # torch marks its eager quantisation API deprecated; it is still the only built-in int8 CPU path.
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return nnqd.Linear.from_float(linear)
