"""s2: the SoVITS acoustic model (semantic codes + phones + reference -> waveform) and its training parts."""

from gsvkit.models.s2.discriminators import MultiPeriodDiscriminator
from gsvkit.models.s2.quantizer import ResidualVectorQuantizer
from gsvkit.models.s2.sovits import (
    Generator,
    PosteriorEncoder,
    ResidualCouplingBlock,
    S2TrainOutput,
    SynthesizerTrn,
    TextEncoder,
)

__all__ = [
    "Generator",
    "MultiPeriodDiscriminator",
    "PosteriorEncoder",
    "ResidualCouplingBlock",
    "ResidualVectorQuantizer",
    "S2TrainOutput",
    "SynthesizerTrn",
    "TextEncoder",
]
