"""s1: the GPT text→semantic model (`Text2SemanticDecoder`) and its sampling functions."""

from gsvkit.models.s1.attention import KVCache
from gsvkit.models.s1.gpt import DecodeStep, S1TrainOutput, Text2SemanticDecoder

__all__ = ["DecodeStep", "KVCache", "S1TrainOutput", "Text2SemanticDecoder"]
