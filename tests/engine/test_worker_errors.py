"""Errors in DataLoader workers: one sentence in the training process, and no process left waiting.

The hang these tests guard against: a worker that ignored SIGTERM outlived an error in the training
process, whose exit then waited for it forever.  Subprocesses run under a generous timeout that
only catches a hang (it kills the process and fails); it is not a speed requirement.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from pdlkit.engine.data_order import (
    SampleError,
    SeededSamples,
    ShardedBatchOrder,
    collate_or_error,
    make_worker_init_fn,
)
from pdlkit.errors import DataError

HANG_GUARD_S = 240


class _FailsOn(torch.utils.data.Dataset):
    def __init__(self, bad_index: int, error: Exception):
        self.bad_index, self.error = bad_index, error

    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == self.bad_index:
            raise self.error
        return torch.tensor([float(index)])


class _Signals(torch.utils.data.Dataset):
    """Reports the signal handlers of the process that loads it."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return torch.tensor([signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                             signal.getsignal(signal.SIGTERM) in (signal.SIG_IGN, signal.SIG_DFL)])


def _loader(dataset, num_workers):
    order = ShardedBatchOrder(len(dataset), len(dataset), seed=0, stop_iteration=1)
    return torch.utils.data.DataLoader(SeededSamples(dataset), batch_sampler=order, num_workers=num_workers,
                                       collate_fn=collate_or_error,
                                       worker_init_fn=make_worker_init_fn(0, 0, 0) if num_workers else None)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_failing_sample_arrives_as_its_own_sentence(num_workers):
    message = "/data/x_gtFine_panoptic.png: not a readable image"
    (batch,) = list(_loader(_FailsOn(2, DataError(message)), num_workers))
    assert isinstance(batch, SampleError)
    assert batch.message == message and batch.index == 2


def test_a_foreign_exception_is_named_with_its_type_and_sample():
    (batch,) = list(_loader(_FailsOn(1, ValueError("sigma must be > 0\nmore detail")), 1))
    assert batch.message == "training sample 1 failed to load (ValueError: sigma must be > 0)"


def test_collate_or_error_collates_good_batches():
    assert torch.equal(collate_or_error([torch.tensor([1.0]), torch.tensor([2.0])]), torch.tensor([[1.0], [2.0]]))


def test_workers_ignore_sigint_and_obey_sigterm():
    previous = signal.signal(signal.SIGTERM, lambda *args: None)  # as the trainer's stop handler does
    try:
        (batch,) = list(_loader(_Signals(), 1))
    finally:
        signal.signal(signal.SIGTERM, previous)
    ignores_sigint, sigterm_default_or_ignored = batch[0].tolist()
    assert ignores_sigint
    assert not sigterm_default_or_ignored  # pdlkit's handler: exits at once


_EXIT_WITH_A_LIVE_WORKER = textwrap.dedent("""
    import signal, sys, torch
    from pdlkit.engine.data_order import SeededSamples, ShardedBatchOrder, make_worker_init_fn

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 8
        def __getitem__(self, index):
            return torch.zeros(1)

    signal.signal(signal.SIGTERM, lambda *args: None)  # the trainer's handler, inherited by the fork
    order = ShardedBatchOrder(8, 1, seed=0)
    loader = torch.utils.data.DataLoader(SeededSamples(Slow()), batch_sampler=order, num_workers=1,
                                         worker_init_fn=make_worker_init_fn(0, 0, 0))
    KEEP = iter(loader)  # alive until exit, as an exception's traceback keeps it
    next(KEEP)
    print("loaded", flush=True)
    sys.exit(3)  # multiprocessing stops the leftover worker with SIGTERM and waits for it
""")


def test_exit_with_a_live_worker_does_not_hang(tmp_path):
    script = tmp_path / "exit_with_worker.py"
    script.write_text(_EXIT_WITH_A_LIVE_WORKER)
    try:
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        pytest.fail("the process waited forever for its DataLoader worker")
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stdout.strip() == "loaded"
