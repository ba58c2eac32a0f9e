"""gsvkit: few-shot voice cloning in the GPT-SoVITS family.

Importing the package does no work: submodules (and their heavy dependencies) load on first use, including the
public names below (`from gsvkit import TTS` imports torch at that moment, not before).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from gsvkit.inference import TTS, Voice, load_voice

__all__ = ["TTS", "Voice", "__version__", "load_voice"]

_LAZY = {"TTS": "gsvkit.inference.pipeline", "Voice": "gsvkit.inference.voice", "load_voice": "gsvkit.inference.voice"}


def __getattr__(name: str) -> Any:
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module 'gsvkit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
