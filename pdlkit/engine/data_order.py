"""Seeded, resumable, rank-sharded data order for training.

The order of samples is a pure function of ``(seed, iteration)``:

* epoch ``e`` is a permutation of the ``n`` training samples drawn from a generator seeded with
  ``(seed, e)``, tiled when ``n`` is smaller than the batch, and cut to ``iters_per_epoch * batch``
  samples (``iters_per_epoch = max(n // batch, 1)``; the remainder is dropped, as with
  ``drop_last``);
* global batch ``i`` is the ``i``-th run of ``batch_size`` (the total over all ranks) samples;
  rank ``r`` of ``w`` takes the ``r``-th contiguous slice of ``batch_size / w`` samples of it.

So two ranks with batch 1 see exactly the samples one process with batch 2 sees, and a run resumed
at iteration ``i`` sees exactly what a straight run sees from ``i`` on, whatever the number of
DataLoader workers.  Each sample also gets its own augmentation seed derived from
``(seed, epoch, position in the epoch)``: :class:`SeededSamples` seeds ``random``, ``numpy`` and
``torch`` with it before calling the dataset, so augmentations repeat exactly on resume and do not
depend on which rank or worker loads the sample.
"""
from __future__ import annotations

import os
import random
import signal
from typing import Iterator, List, Tuple

import numpy as np
import torch

from ..errors import PdlError

__all__ = ["ShardedBatchOrder", "SeededSamples", "SampleError", "collate_or_error", "sample_seed", "worker_seed",
           "make_worker_init_fn", "reset_worker_signals"]

_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A deterministic 63-bit hash of integers (splitmix64 steps), stable across processes and
    Python versions (unlike ``hash``)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state & ((1 << 63) - 1)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Augmentation seed of the sample at ``position`` of ``epoch`` (a 32-bit value, numpy-safe)."""
    return _mix(seed, 1, epoch, position) & 0xFFFFFFFF


def worker_seed(seed: int, rank: int, epoch: int, worker_id: int) -> int:
    """Base seed of DataLoader worker ``worker_id`` of ``rank``, started at ``epoch``."""
    return _mix(seed, 2, rank, epoch, worker_id) & 0xFFFFFFFF


class ShardedBatchOrder:
    """Batch sampler yielding, for one rank, lists of ``(dataset index, sample seed)`` pairs.

    Infinite unless ``stop_iteration`` is given; starts at ``start_iteration`` (to resume a run).
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, start_iteration: int = 0, stop_iteration: int | None = None):
        if num_samples <= 0:
            raise ValueError("the training set is empty")
        if batch_size <= 0 or batch_size % world_size != 0:
            raise ValueError(f"batch size {batch_size} is not a positive multiple of the world size {world_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.per_rank = self.batch_size // world_size
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.start_iteration = int(start_iteration)
        self.stop_iteration = stop_iteration
        self.iters_per_epoch = max(self.num_samples // self.batch_size, 1)
        self._cached_epoch = -1
        self._cached_order: torch.Tensor | None = None

    def epoch_of(self, iteration: int) -> int:
        return iteration // self.iters_per_epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """[iters_per_epoch * batch_size] int64 dataset indices of ``epoch``."""
        if epoch != self._cached_epoch:
            generator = torch.Generator()
            generator.manual_seed(_mix(self.seed, 0, epoch))
            permutation = torch.randperm(self.num_samples, generator=generator)
            needed = self.iters_per_epoch * self.batch_size
            repeats = -(-needed // self.num_samples)
            self._cached_order = permutation.repeat(repeats)[:needed]
            self._cached_epoch = epoch
        return self._cached_order

    def global_batch(self, iteration: int) -> List[Tuple[int, int]]:
        """All ``batch_size`` (index, seed) pairs of ``iteration``, over all ranks."""
        epoch = self.epoch_of(iteration)
        start = (iteration % self.iters_per_epoch) * self.batch_size
        order = self.epoch_order(epoch)
        return [(int(order[start + k]), sample_seed(self.seed, epoch, start + k)) for k in range(self.batch_size)]

    def rank_batch(self, iteration: int) -> List[Tuple[int, int]]:
        batch = self.global_batch(iteration)
        return batch[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        iteration = self.start_iteration
        while self.stop_iteration is None or iteration < self.stop_iteration:
            yield self.rank_batch(iteration)
            iteration += 1

    def __len__(self) -> int:
        if self.stop_iteration is None:
            raise TypeError("an infinite ShardedBatchOrder has no length")
        return max(self.stop_iteration - self.start_iteration, 0)


class SeededSamples(torch.utils.data.Dataset):
    """Wraps a map-style dataset: item ``(index, seed)`` is ``dataset[index]`` drawn with the global
    ``random`` / ``numpy`` / ``torch`` generators seeded by ``seed``.

    The generators' previous states are restored afterwards, so loading in the main process
    (``num_workers=0``) does not disturb the training process's own random stream (dropout).
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        saved_python = random.getstate()
        saved_numpy = np.random.get_state()
        saved_torch = torch.get_rng_state()
        try:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            return self.dataset[index]
        except Exception as exc:  # noqa: BLE001 - carried to the training process as one sentence
            return SampleError.from_exception(index, exc)
        finally:
            random.setstate(saved_python)
            np.random.set_state(saved_numpy)
            torch.set_rng_state(saved_torch)


class SampleError:
    """A sample that could not be loaded, carried through the loader instead of an exception.

    An exception raised in a DataLoader worker reaches the training process as the worker's whole
    traceback folded into one message; this keeps the one sentence that names the file (a
    :class:`~pdlkit.errors.PdlError`'s message) or, for anything else, the error type and its first line.
    """

    def __init__(self, index: int, message: str):
        self.index, self.message = int(index), message

    @classmethod
    def from_exception(cls, index: int, exc: BaseException) -> "SampleError":
        if isinstance(exc, PdlError):
            return cls(index, str(exc))
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return cls(index, f"training sample {index} failed to load ({type(exc).__name__}: {first})")


def collate_or_error(items: list):
    """``default_collate`` of the loaded samples, or the first :class:`SampleError` among them."""
    for item in items:
        if isinstance(item, SampleError):
            return item
    return torch.utils.data.default_collate(items)


def make_worker_init_fn(seed: int, rank: int, epoch: int):
    """A DataLoader ``worker_init_fn`` that seeds each worker from (seed, rank, epoch, worker id)
    and keeps workers out of the way of Ctrl-C and of the training process's threads."""
    return _WorkerInit(seed, rank, epoch)


class _WorkerInit:
    # A class, not a closure, so it pickles under the "spawn" start method.
    def __init__(self, seed: int, rank: int, epoch: int):
        self.seed, self.rank, self.epoch = seed, rank, epoch

    def __call__(self, worker_id: int) -> None:
        base = worker_seed(self.seed, self.rank, self.epoch, worker_id)
        random.seed(base)
        np.random.seed(base)
        torch.manual_seed(base)
        reset_worker_signals()
        # No torch.set_num_threads here: torch's worker loop already sets one thread before calling
        # this, and a second call in a forked child can hang in OpenMP (seen under pytest-xdist).
        # Not cv2.setNumThreads either: resizing OpenCV's thread pool in a forked child whose parent
        # had used it deadlocks (seen here: the worker hung in pthread_cond_destroy).


def reset_worker_signals() -> None:
    """Replace the signal handlers a worker inherits from the training process.

    SIGINT is ignored: Ctrl-C reaches the whole process group, and the training process saves a
    checkpoint and then shuts its workers down through their queues.  SIGTERM ends the worker at
    once with exit status 0.  It must end it: ``multiprocessing`` stops leftover workers with SIGTERM
    when the training process exits (after an error, for example), and a worker that ignored it
    made that exit wait forever.  Status 0 rather than death by signal, because torch's SIGCHLD
    handler would otherwise raise in the middle of a step of a training process that received the
    same SIGTERM (a scheduler signalling the whole job) and is about to save its checkpoint.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_now)


def _exit_now(signum, frame) -> None:
    # os._exit, not sys.exit: a normal exit joins the queue feeder threads, which can block on a
    # full pipe that the training process no longer reads.
    os._exit(0)
