"""Process-group setup for DDP started by ``torchrun`` (env ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

One process per GPU with NCCL, or several CPU processes with gloo.  Without those variables
everything degrades to a single process (rank 0 of 1) and no process group is created.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

__all__ = ["DistributedContext", "setup_distributed", "cleanup_distributed"]


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str = ""  # "" when no process group was created
    owns_group: bool = False  # True when setup_distributed created the group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def all_reduce_sum(self, tensor):
        """Sum ``tensor`` over all ranks in place (no-op in a single process); returns it."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        from ..errors import PdlError

        raise PdlError(f"environment variable {name}={raw!r} is not an integer") from None


def setup_distributed() -> DistributedContext:
    """Read torchrun's environment, pick the device, and create the process group when needed.

    NCCL on CUDA (one GPU per local rank), gloo on the CPU.  If a process group already exists
    (e.g. a caller initialised it), it is reused and left to the caller to destroy.
    """
    import torch
    import torch.distributed as dist

    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        device_index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(device_index)
        device = f"cuda:{device_index}"
    else:
        device = "cpu"
    context = DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
    if world_size > 1:
        if dist.is_available() and dist.is_initialized():
            context.backend = dist.get_backend()
        else:
            context.backend = "nccl" if use_cuda else "gloo"
            # torchrun sets MASTER_ADDR / MASTER_PORT; env:// reads them.  The long timeout covers ranks
            # waiting at a gather while the slowest one predicts its share of a large val split.
            dist.init_process_group(backend=context.backend, init_method="env://", rank=rank,
                                    world_size=world_size, timeout=datetime.timedelta(hours=2))
            context.owns_group = True
    return context


def cleanup_distributed(context: DistributedContext) -> None:
    if context.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        context.owns_group = False
