"""Conditional flow-matching mel decoder of the v3/v4 families: the DiT estimator and its sampler."""

from gsvkit.models.cfm.dit import DiT
from gsvkit.models.cfm.flow_matching import CFM, CHUNKS, ChunkSizes, decode_chunked

__all__ = ["CFM", "CHUNKS", "ChunkSizes", "DiT", "decode_chunked"]
