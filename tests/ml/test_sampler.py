"""Aspect-ratio grouped batches: never mixed, nothing lost, equal length under DDP."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DistributedSampler, RandomSampler

from ml.data import GroupedBatchSampler


def test_batches_hold_one_group_and_every_index_once() -> None:
    groups = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0]
    sampler = RandomSampler(range(len(groups)), generator=torch.Generator().manual_seed(0))
    batches = list(GroupedBatchSampler(sampler, groups, batch_size=3))
    assert sorted(i for b in batches for i in b) == list(range(len(groups)))
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert all(len(b) <= 3 for b in batches)
    assert len(GroupedBatchSampler(sampler, groups, batch_size=3)) == len(batches) == 4


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_runs_the_same_number_of_steps(world: int) -> None:
    groups = [i % 3 == 0 for i in range(23)]
    lengths = set()
    for rank in range(world):
        sampler = DistributedSampler(range(23), num_replicas=world, rank=rank, seed=1)
        batches = list(GroupedBatchSampler(sampler, groups, batch_size=4, equal_length=True))
        assert all(len({groups[i] for i in b}) == 1 for b in batches)
        lengths.add(len(batches))
    assert lengths == {math.ceil(math.ceil(23 / world) / 4)}


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupedBatchSampler(range(3), [0, 0, 0], batch_size=0)
