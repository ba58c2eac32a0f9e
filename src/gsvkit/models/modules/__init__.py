"""Building blocks shared by the models (VITS/HiFi-GAN family), named as upstream so official weights load."""

from gsvkit.models.modules.attention import FFN, Encoder, MultiHeadAttention
from gsvkit.models.modules.commons import (
    LRELU_SLOPE,
    LayerNorm,
    fused_add_tanh_sigmoid_multiply,
    get_padding,
    rand_slice_segments,
    sequence_mask,
    slice_segments,
)
from gsvkit.models.modules.conv import Conv1d, ConvTranspose1d, from_rows, to_rows
from gsvkit.models.modules.flows import Flip, ResidualCouplingBlock, ResidualCouplingLayer
from gsvkit.models.modules.mrte import MRTE
from gsvkit.models.modules.resblocks import ResBlock1, ResBlock2
from gsvkit.models.modules.style_encoder import MelStyleEncoder
from gsvkit.models.modules.wavenet import WN
from gsvkit.models.modules.weight_norm import (
    fold_weight_norm,
    has_weight_norm,
    recompute_weight_norm,
    remove_weight_norm,
    weight_norm,
)

__all__ = [
    "FFN",
    "Conv1d",
    "ConvTranspose1d",
    "LRELU_SLOPE",
    "MRTE",
    "WN",
    "Encoder",
    "Flip",
    "LayerNorm",
    "MelStyleEncoder",
    "MultiHeadAttention",
    "ResBlock1",
    "ResBlock2",
    "ResidualCouplingBlock",
    "ResidualCouplingLayer",
    "fold_weight_norm",
    "from_rows",
    "fused_add_tanh_sigmoid_multiply",
    "get_padding",
    "has_weight_norm",
    "rand_slice_segments",
    "recompute_weight_norm",
    "remove_weight_norm",
    "sequence_mask",
    "slice_segments",
    "to_rows",
    "weight_norm",
]
