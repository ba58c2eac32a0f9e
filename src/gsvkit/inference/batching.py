"""How fragments are scheduled: grouped for decoding (upstream `TTS.to_batch`) and generated in the background."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from gsvkit.inference.textprep import TextFeatures
from gsvkit.utils.cores import usable_cores, use_threads


def fragment_batches(feats: list[TextFeatures], size: int, threshold: float, bucket: bool) -> list[list[int]]:
    """Fragment indices grouped for decoding (upstream `TTS.to_batch`): in order, or bucketed by text length."""
    n = len(feats)
    if size <= 1 or n <= 1:
        return [[i] for i in range(n)]
    if not bucket:
        return [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    order = sorted(range(n), key=lambda i: len(feats[i].norm_text))
    lengths = np.array([len(feats[i].norm_text) for i in order], dtype=np.float32)
    batches, pos = [], 0
    while pos < n:
        end = min(pos + size, n)
        while end > pos:
            part = lengths[pos:end]
            score = part[(end - pos) // 2] / (part.mean() + 1e-8)
            if score >= threshold or end - pos == 1:
                batches.append(order[pos:end])
                break
            end -= 1
        pos = end
    return batches


_END = object()


def threaded(choice: bool | None, device: torch.device) -> bool:
    """Whether streaming generates s1's tokens in a background thread (`StreamParams.threaded`; None decides).

    On a GPU, yes. On a CPU only when the cores hold both stages at torch's thread count: where they do not, s1
    and s2 take turns on the same cores and the first audio comes later (2 cores, 2 threads, int4 s1: 1.19 s in a
    background thread against 0.82 s without, medians of 5 alternating pairs of `benchmarks/infer.py
    --thread-pairs`; the whole stream took 2 % longer without).
    """
    if choice is not None:
        return choice
    return device.type != "cpu" or usable_cores() >= 2 * torch.get_num_threads()


def background(tokens: Iterator[int]) -> Iterator[int]:
    """Run the token generator in its own thread, so s1 generates while s2 decodes (torch releases the GIL).

    The thread computes on as many torch threads as the calling thread (a new thread would take the count last set
    by any thread). Closing this iterator stops the producer after its current step.
    """
    q: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()
    threads = torch.get_num_threads()

    def produce() -> None:
        use_threads(threads)
        try:
            for tok in tokens:
                q.put(tok)
                if stop.is_set():
                    break
        except BaseException as err:  # handed to the consumer, raised there
            q.put(err)
        finally:
            q.put(_END)

    worker = threading.Thread(target=produce, name="gsvkit-s1", daemon=True)
    worker.start()
    try:
        while (item := q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
