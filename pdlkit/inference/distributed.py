"""Sharing prediction and evaluation between the processes of a ``torchrun`` job.

Every helper reads the default ``torch.distributed`` process group when one is initialised (the
CLI creates it under torchrun) and degrades to a single process (rank 0 of 1) otherwise.  Shares
are strided over the sorted input list: deterministic, disjoint, balanced by count (sizes differ by
at most one) and the same on every rerun, so a rerun after a crash finds each rank's done files.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple, TypeVar

__all__ = ["world", "shard", "all_gather_objects", "sync_module_state"]

T = TypeVar("T")


def world() -> Tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T], rank: int, world_size: int) -> List[T]:
    """The share of ``rank``: items ``rank, rank + world_size, ...`` of the (sorted) ``items``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    return list(items[rank::world_size])


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    import torch.distributed as dist

    rank, world_size = world()
    if world_size == 1:
        return [obj]
    gathered: List[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def sync_module_state(module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so that all ranks predict alike (DDP on
    the CPU keeps each rank's own batch-norm running statistics)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)
