"""s2: the SoVITS acoustic model (semantic codes + phones + reference -> waveform) and its training parts."""

from gsvkit.models.s2.discriminators import MultiPeriodDiscriminator
from gsvkit.models.s2.quantizer import ResidualVectorQuantizer
from gsvkit.models.s2.sovits import (
    S2_PRECISIONS,
    Generator,
    PosteriorEncoder,
    ResidualCouplingBlock,
    S2TrainOutput,
    SynthesizerTrn,
    TextEncoder,
    native_bf16,
    resolve_s2_precision,
)

__all__ = [
    "S2_PRECISIONS",
    "Generator",
    "MultiPeriodDiscriminator",
    "PosteriorEncoder",
    "ResidualCouplingBlock",
    "ResidualVectorQuantizer",
    "S2TrainOutput",
    "SynthesizerTrn",
    "TextEncoder",
    "native_bf16",
    "resolve_s2_precision",
]
