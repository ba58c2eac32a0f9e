"""gsvkit: few-shot voice cloning in the GPT-SoVITS family.

Importing the package does no work: submodules (and their heavy dependencies) load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
