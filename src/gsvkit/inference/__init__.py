"""Inference: `TTS` (the pipeline), `Voice` directories, streaming.

Names load on first use, so `import gsvkit.inference` stays cheap (no torch until a model is needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from gsvkit.inference.pipeline import TTS
    from gsvkit.inference.results import AudioStream, SynthesisResult
    from gsvkit.inference.voice import Voice, create_voice, load_voice, scan_voices

__all__ = ["TTS", "AudioStream", "SynthesisResult", "Voice", "create_voice", "load_voice", "scan_voices"]

_HOMES = {
    "TTS": "gsvkit.inference.pipeline",
    "AudioStream": "gsvkit.inference.results",
    "SynthesisResult": "gsvkit.inference.results",
    "Voice": "gsvkit.inference.voice",
    "create_voice": "gsvkit.inference.voice",
    "load_voice": "gsvkit.inference.voice",
    "scan_voices": "gsvkit.inference.voice",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gsvkit.inference' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
