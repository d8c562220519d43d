"""torchrun / DDP plumbing: who am I, and moving small Python objects between ranks."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the job; a plain run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The rank that writes files and logs."""
        return self.rank == 0


def init_from_env(device: torch.device) -> Context:
    """Join the process group torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    ctx = Context(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
    logger.info("rank %d of %d (local %d)", ctx.rank, ctx.world_size, ctx.local_rank)
    return ctx


def gather(ctx: Context, items: list[T]) -> list[T]:
    """Concatenate every rank's `items` (on all ranks)."""
    if not ctx.distributed:
        return items
    parts: list[list[T] | None] = [None] * ctx.world_size
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in (part or [])]


def broadcast(ctx: Context, value: T) -> T:
    """Rank 0's `value`, on every rank."""
    if not ctx.distributed:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average(ctx: Context, tensors: list[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over the ranks."""
    if not ctx.distributed:
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(ctx.world_size)


def barrier(ctx: Context) -> None:
    """Wait for every rank."""
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: Context) -> None:
    """Leave the process group."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
