"""CPU thread defaults that leave room for a busy neighbour.

On a machine whose cores are shared (another training run, a compile, a second user), threads
that wait for each other at every parallel region lose far more than the share the neighbour
takes: an OpenMP thread that spins while its partner is descheduled burns the core the partner
needs.  pdlkit therefore (1) lets waiting OpenMP threads sleep instead of spin
(``OMP_WAIT_POLICY=PASSIVE``, unless the environment sets it), (2) runs the network on at most
the cores this process may use (``os.sched_getaffinity``), and (3) runs OpenCV single-threaded:
its work happens in the data-loading workers and image readers, whose parallelism is the number of
workers, not threads inside each.  ``--threads N`` (``pdl train`` / ``pdl predict``) overrides (2).

Sleeping costs a wake-up at every parallel region: on an otherwise idle machine the toy config
trains ~25 % slower than with libgomp's default 3 ms spin (0.89 against 0.69 s/iteration).  Short
spins were measured as the middle way (``benchmarks/train_load.py``, all settings quiet and beside
a process busy on one core, in one run, with the machine shared by other jobs): a 1,000-iteration
spin (``GOMP_SPINCOUNT=1000``, ~10 us) gained 3 % quiet and lost 42 % beside the busy process;
10,000 and more were 3-6x slower than passive even "quiet", since any other load on the cores turns
every spin into a stolen time slice.  Passive is therefore the default; on a machine of its own a
user gets the spin back with ``OMP_WAIT_POLICY=ACTIVE`` or ``GOMP_SPINCOUNT=300000``, which this
module leaves alone.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["usable_cores", "default_threads", "set_wait_policy", "configure_threads", "MAX_DEFAULT_THREADS"]

# More intra-op threads than this gain little for one image and cost much when cores are shared.
MAX_DEFAULT_THREADS = 8


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where unknown)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def default_threads() -> int:
    """Intra-op threads when none are asked for: the usable cores shared out among the processes
    ``torchrun`` started on this machine (``LOCAL_WORLD_SIZE``), at most ``MAX_DEFAULT_THREADS``."""
    try:
        local_processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    except ValueError:
        local_processes = 1
    return max(min(usable_cores() // local_processes, MAX_DEFAULT_THREADS), 1)


def set_wait_policy() -> None:
    """Make idle OpenMP threads sleep rather than spin, unless the environment says otherwise
    (``OMP_WAIT_POLICY``, or libgomp's ``GOMP_SPINCOUNT``).

    Takes effect only before the OpenMP runtime loads (before ``import torch``): the CLI calls it
    first thing.
    """
    if "GOMP_SPINCOUNT" not in os.environ:  # a spin count asked for is a wait policy chosen
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_threads(threads: Optional[int] = None) -> int:
    """Set torch's intra-op threads (``threads``, or :func:`default_threads`) and OpenCV's (one);
    return the number of intra-op threads."""
    import cv2
    import torch

    count = int(threads) if threads else default_threads()
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(count)
    # Set here, before the loader forks its workers, so that they inherit it: resizing OpenCV's
    # pool inside a forked worker can deadlock.
    cv2.setNumThreads(1)
    return count
