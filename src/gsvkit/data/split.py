"""Train/validation split: deterministic by seed, stratified by speaker, or named explicitly.

The split depends only on the ids, their speakers and the seed: each id gets a
pseudo-random key from a hash of (seed, id), and within each speaker the ids with the smallest keys go to
validation. Adding or removing one utterance therefore moves at most a few others between the sets, and the same
inputs always give the same split, whatever order they arrive in.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from gsvkit.errors import DataError


def _key(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}\0{item_id}".encode()).hexdigest()


def assign_split(
    items: Sequence[tuple[str, str]],
    fraction: float = 0.1,
    seed: int = 0,
    val_ids: Iterable[str] | None = None,
    min_val: int = 1,
) -> dict[str, str]:
    """Map each `(id, speaker)` to "train" or "val".

    With `val_ids`, exactly those ids are validation (an unknown id is a DataError). Otherwise each speaker with
    at least two utterances gives round(fraction * n) of them (at least one) to validation, never all of them; and
    the whole split has at least `min_val` validation items when there are two or more utterances in all.
    """
    ids = [i for i, _ in items]
    if val_ids is not None:
        wanted = set(val_ids)
        unknown = sorted(wanted - set(ids))
        if unknown:
            raise DataError(
                f"--val names ids that are not in the dataset: {', '.join(unknown[:10])}"
                + (" ..." if len(unknown) > 10 else "")
                + "; see manifest.jsonl for the ids"
            )
        return {i: ("val" if i in wanted else "train") for i in ids}
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"val fraction must be in [0, 1), got {fraction}")
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for item_id, speaker in items:
        by_speaker[speaker].append(item_id)
    split = dict.fromkeys(ids, "train")
    if fraction == 0.0 or len(ids) < 2:
        return split
    for members in by_speaker.values():
        if len(members) < 2:
            continue
        n_val = min(len(members) - 1, max(1, math.floor(fraction * len(members) + 0.5)))
        for item_id in sorted(members, key=lambda i: _key(seed, i))[:n_val]:
            split[item_id] = "val"
    n_val = sum(1 for s in split.values() if s == "val")
    if n_val < min_val:
        # every speaker has a single utterance: take validation items across speakers instead
        spare = [i for i in sorted(ids, key=lambda i: _key(seed, i)) if split[i] == "train"]
        for item_id in spare[: min(min_val, len(ids) - 1) - n_val]:
            split[item_id] = "val"
    return split
