"""Importing one module of a heavy package without running the package's `__init__`.

`from nltk.tokenize import TweetTokenizer` runs `nltk/__init__.py`, which imports most of NLTK and, through it,
scikit-learn, SciPy and pandas when they are installed: 1.7 s and about 136 MB of resident memory for a
tokenizer that needs only `re`, `html` and `regex`. `import_leaf` loads such a leaf module with its parent
packages standing in as bare namespaces, then takes every module it brought in out of `sys.modules` again, so a
later ordinary `import nltk` builds the whole package as usual (and the leaf's classes stay usable).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

# Held while parent packages are bare stand-ins in `sys.modules`; `import_whole` takes it too, so no other thread
# imports the real package in that moment and gets a stand-in.
IMPORT_LOCK = threading.RLock()


def import_leaf(name: str) -> types.ModuleType:
    """Module `name` ("pkg.sub.leaf"). If its top package is already imported, an ordinary import; otherwise the
    parents are bare packages while `name` and its own imports load, and all of them leave `sys.modules` after."""
    top = name.split(".")[0]
    with IMPORT_LOCK:
        if top in sys.modules:
            return importlib.import_module(name)
        before = set(sys.modules)
        try:
            parts = name.split(".")
            for i in range(1, len(parts)):
                pkg = ".".join(parts[:i])
                spec = importlib.util.find_spec(pkg)  # the parent is a stand-in already: no __init__ runs
                if spec is None or spec.submodule_search_locations is None:
                    raise ModuleNotFoundError(f"no package {pkg!r} (needed for {name})", name=pkg)
                stand_in = types.ModuleType(pkg)
                stand_in.__path__ = list(spec.submodule_search_locations)
                stand_in.__spec__ = spec
                sys.modules[pkg] = stand_in
            return importlib.import_module(name)
        finally:
            for key in set(sys.modules) - before:
                if key == top or key.startswith(top + "."):
                    del sys.modules[key]


def import_whole(name: str) -> types.ModuleType:
    """An ordinary import of `name`, never while `import_leaf` has stand-ins in place."""
    with IMPORT_LOCK:
        return importlib.import_module(name)
