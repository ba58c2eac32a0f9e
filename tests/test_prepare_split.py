"""Train/validation split: deterministic by seed and order-free, stratified by speaker, explicit ids."""

from __future__ import annotations

import random

import pytest

from gsvkit.data.split import assign_split
from gsvkit.errors import DataError


def items(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"{spk}_{i:03d}", spk) for spk, n in counts.items() for i in range(n)]


def val_of(split: dict[str, str]) -> set[str]:
    return {i for i, s in split.items() if s == "val"}


def test_deterministic_and_independent_of_order():
    data = items({"a": 40, "b": 25})
    first = assign_split(data, 0.1, seed=3)
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    assert assign_split(shuffled, 0.1, seed=3) == first
    assert val_of(assign_split(data, 0.1, seed=4)) != val_of(first)


def test_stratified_by_speaker():
    split = assign_split(items({"a": 40, "b": 20, "c": 5, "d": 1}), 0.1, seed=0)
    per = {spk: sum(1 for i in val_of(split) if i.startswith(spk + "_")) for spk in "abcd"}
    assert per == {"a": 4, "b": 2, "c": 1, "d": 0}  # at least one per speaker that can spare one


def test_at_least_one_validation_item():
    assert len(val_of(assign_split(items({"a": 3}), 0.1))) == 1
    assert len(val_of(assign_split(items({"a": 1, "b": 1, "c": 1}), 0.1))) == 1  # single-item speakers
    assert val_of(assign_split(items({"a": 1}), 0.1)) == set()  # one utterance: nothing to hold out
    assert val_of(assign_split(items({"a": 10}), 0.0)) == set()


def test_adding_an_item_moves_few_others():
    data = items({"a": 50})
    before = val_of(assign_split(data, 0.1))
    after = val_of(assign_split([*data, ("a_new", "a")], 0.1))
    assert len(before ^ after) <= 2


def test_explicit_ids():
    data = items({"a": 5})
    assert val_of(assign_split(data, 0.1, val_ids=["a_001", "a_003"])) == {"a_001", "a_003"}
    with pytest.raises(DataError, match="not in the dataset: zzz"):
        assign_split(data, 0.1, val_ids=["zzz"])
    with pytest.raises(DataError, match="fraction"):
        assign_split(data, 1.5)
