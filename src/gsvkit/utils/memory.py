"""Returning freed memory to the system while models load (glibc only; elsewhere a no-op).

Loading and converting a model frees many large tensors (the float weights a quantised copy replaces, the
temporaries of quantisation). glibc's malloc raises its mmap threshold each time a large mmapped block is freed, so
after the first few frees most of these blocks come from the heap, and when they are freed in between long-lived
allocations the process keeps their pages: through `TTS` with an int4 s1 that was 70-80 MB kept for nothing.
`loading_memory()` returns the free heap (`malloc_trim`) and fixes the threshold low while a model loads (blocks
of 64 KiB and more are mapped and unmapped, so freeing one returns it; the heap's top is trimmed from 128 KiB),
then fixes it at glibc's own upper bound (32 MiB) and the heap's trim threshold at twice that, where the dynamic
rule would have ended up anyway, so synthesis reuses its temporaries from the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
LOADING_THRESHOLD = 64 * 1024  # mmap threshold while loading; the heap's trim threshold then is twice this
AFTER_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
AFTER_TRIM = 2 * AFTER_THRESHOLD  # the trim threshold glibc's dynamic rule pairs with it


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


@contextmanager
def loading_memory() -> Iterator[None]:
    """Large blocks freed inside this block go back to the system (see the module's doc)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)  # the free heap goes back first, so large blocks cannot be carved from it
        libc.mallopt(M_MMAP_THRESHOLD, LOADING_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * LOADING_THRESHOLD)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, AFTER_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, AFTER_TRIM)
