"""Batches of images that share an aspect ratio, so padding to the batch's size wastes little."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches drawn from `sampler` in its order, each holding indices of a single group.

    With `equal_length` every epoch has exactly ceil(len(sampler) / batch_size) batches: under
    DDP each rank must run the same number of steps, so the partial leftovers of the groups are
    cut to that count (a few images skip an epoch, a different few each time).
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        group_ids: Sequence[int],
        batch_size: int,
        *,
        equal_length: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.equal_length = equal_length

    def _batches(self) -> list[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        full: list[list[int]] = []
        for index in self.sampler:
            buffer = buffers[self.group_ids[index]]
            buffer.append(index)
            if len(buffer) == self.batch_size:
                full.append(buffer.copy())
                buffer.clear()
        leftovers = [b for b in buffers.values() if b]
        batches = full + leftovers
        if self.equal_length:
            batches = batches[: math.ceil(len(self.sampler) / self.batch_size)]  # type: ignore[arg-type]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        if self.equal_length:
            return math.ceil(len(self.sampler) / self.batch_size)  # type: ignore[arg-type]
        # A sampler as long as the data is a permutation of it: count the groups without
        # drawing one, which would advance a random sampler's generator.
        size = len(self.sampler)  # type: ignore[arg-type]
        indices: Iterable[int] = range(size) if size == len(self.group_ids) else self.sampler
        counts: dict[int, int] = defaultdict(int)
        for index in indices:
            counts[self.group_ids[index]] += 1
        return sum(math.ceil(n / self.batch_size) for n in counts.values())
