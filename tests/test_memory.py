"""`loading_memory`: large blocks allocated while models load are mapped (so freeing one returns it to the system);
afterwards they come from the heap again. Checked with glibc's own accounting (`mallinfo2`)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from gsvkit.utils import memory

pytestmark = pytest.mark.skipif(
    memory._libc() is None or not hasattr(memory._libc(), "mallinfo2"), reason="glibc 2.33 or later only"
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]  # fmt: skip


def _mapped_bytes_for(size: int) -> int:
    """How much glibc's mapped-block total grows while a block of `size` bytes is held."""
    libc = memory._libc()
    assert libc is not None
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    try:
        return libc.mallinfo2().hblkhd - before
    finally:
        libc.free(block)


CHECK = """
import sys
sys.path.insert(0, {tests!r})
from test_memory import _mapped_bytes_for
from gsvkit.utils import memory
size = 4 << 20  # 4 MiB: above the loading threshold, below the one after
_mapped_bytes_for(8 << 20)  # freeing a mapped 8 MiB block raises glibc's dynamic threshold to 8 MiB
before = _mapped_bytes_for(size)  # so a 4 MiB block now comes from the heap: freeing it keeps its pages
with memory.loading_memory():
    inside = _mapped_bytes_for(size)
print(before, inside, _mapped_bytes_for(size))
"""


def test_blocks_are_mapped_while_loading_and_come_from_the_heap_afterwards():
    # A fresh interpreter: in a long-lived one a large free heap top can serve the block without mapping it.
    code = CHECK.format(tests=str(Path(__file__).parent))
    before, inside, after = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                    check=True).stdout.split())  # fmt: skip
    assert before == 0  # what glibc does on its own after large frees (a model load makes many)
    assert inside >= 4 << 20  # its own mapping: freeing it gives the pages back
    assert after == 0  # from the heap again (threshold 32 MiB), as synthesis expects
