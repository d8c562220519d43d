"""Training order: rare classes repeated (LVIS), then batches of one aspect ratio each."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import DistributedSampler, Sampler


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


def repeat_factors(label_sets: Sequence[Collection[int]], threshold: float) -> list[float]:
    """Each image's LVIS repeat factor: the largest max(1, sqrt(t / f(c))) of its classes.

    f(c) is the share of the images holding class c; an image without boxes has factor 1.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"the repeat threshold must be in (0, 1], not {threshold}")
    images = len(label_sets)
    holding = Counter(c for labels in label_sets for c in set(labels))
    per_class = {c: max(1.0, math.sqrt(threshold * images / n)) for c, n in holding.items()}
    return [max((per_class[c] for c in labels), default=1.0) for labels in label_sets]


class RepeatFactorSampler(Sampler[int]):
    """Every image `factor` times per epoch on average, shuffled, and this rank's share of it.

    As Detectron2's RepeatFactorTrainingSampler, factors are rounded stochastically each
    epoch (2.3: twice, or three times with probability 0.3). Which images repeat depends on
    (seed, epoch) alone, so every rank draws the same epoch and a resumed run the same as
    an uninterrupted one; DistributedSampler then shuffles and shards that list exactly as
    it does the plain image list. `set_epoch` picks the epoch, as DistributedSampler's.
    """

    def __init__(
        self, factors: Sequence[float], num_replicas: int = 1, rank: int = 0, *, seed: int = 0
    ) -> None:
        if any(f < 1 for f in factors):
            raise ValueError("repeat factors must be at least 1")
        self.factors = np.asarray(factors, dtype=np.float64)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch `epoch`'s repeats; the same (seed, epoch) always draws the same."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed % 2**64, epoch])
        whole = np.floor(self.factors)
        counts = whole + (rng.random(len(self.factors)) < self.factors - whole)
        self.indices: list[int] = np.repeat(
            np.arange(len(self.factors)), counts.astype(int)
        ).tolist()
        shards: Any = self.indices  # a list is all DistributedSampler needs: its length
        self._shards: DistributedSampler[int] = DistributedSampler(
            shards, self.num_replicas, self.rank, shuffle=True, seed=self.seed
        )
        self._shards.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return (self.indices[i] for i in self._shards)

    def __len__(self) -> int:
        return len(self._shards)
