"""Sharing prediction and evaluation between the processes of a ``torchrun`` job.

Every helper reads the default ``torch.distributed`` process group when one is initialised (the
CLI creates it under torchrun) and degrades to a single process (rank 0 of 1) otherwise.  Shares
are strided over the sorted input list: deterministic, disjoint, balanced by count (sizes differ by
at most one) and the same on every rerun, so a rerun after a crash finds each rank's done files.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, TypeVar

__all__ = ["world", "shard", "barrier", "broadcast_object", "all_gather_objects", "shared_temp_dir",
           "sync_module_state"]

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


def _barrier_kwargs() -> dict:
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        return {"device_ids": [torch.cuda.current_device()]}
    return {}


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier(**_barrier_kwargs())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; small objects such as result dicts)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    import torch.distributed as dist

    rank, world_size = world()
    if world_size == 1:
        return [obj]
    gathered: List[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


@contextlib.contextmanager
def shared_temp_dir(parent: Optional[str | os.PathLike] = None, prefix: str = "pdl_") -> Iterator[Path]:
    """A temporary folder every rank uses: made by rank 0, its name sent to the others, removed by
    rank 0 once every rank is done.  Across several machines ``parent`` (default: the system's
    temporary folder) must be on a file system they share."""
    rank, world_size = world()
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    if world_size == 1:
        with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as path:
            yield Path(path)
        return
    path = broadcast_object(tempfile.mkdtemp(prefix=prefix, dir=parent) if rank == 0 else None)
    try:
        yield Path(path)
    finally:
        barrier()
        if rank == 0:
            shutil.rmtree(path, ignore_errors=True)


def sync_module_state(module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so that all ranks predict alike (DDP on
    the CPU keeps each rank's own batch-norm running statistics)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)
