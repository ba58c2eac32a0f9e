"""The CPU cores this process may run on, for choosing how many things run at once."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's CPU affinity mask (what a container or `taskset` allows), else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def share(cores: int, running: int) -> int:
    """Torch threads for each of `running` jobs splitting `cores` cores: an equal whole share, at least one."""
    return max(1, cores // max(1, running))


def use_threads(n: int) -> None:
    """Make the calling thread compute on `n` torch threads; other threads keep their own count.

    torch keeps the count per thread, but at a thread's first parallel op it sets the count from the last one set
    by any thread: a count set before that would be lost, so the thread is initialised first.
    """
    import torch

    torch.get_num_threads()  # the thread's first-use initialisation, now rather than at its first op
    torch.set_num_threads(n)
