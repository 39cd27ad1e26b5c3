"""The seeded, resumable, rank-sharded data order."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from pdlkit.engine.data_order import SeededSamples, ShardedBatchOrder, make_worker_init_fn, worker_seed


def _take(order, count):
    return list(itertools.islice(iter(order), count))


def test_each_epoch_is_a_permutation_and_epochs_differ():
    order = ShardedBatchOrder(10, 3, seed=5)
    assert order.iters_per_epoch == 3  # 10 // 3, the remaining sample is dropped per epoch
    epoch0 = [i for batch in _take(order, 3) for i, _ in batch]
    assert len(set(epoch0)) == 9 and set(epoch0) <= set(range(10))
    epoch1 = [i for it in range(3, 6) for i, _ in order.global_batch(it)]
    assert len(set(epoch1)) == 9
    assert epoch0 != epoch1


def test_small_dataset_is_tiled_to_fill_a_batch():
    order = ShardedBatchOrder(3, 8, seed=0)
    batch = order.global_batch(0)
    assert len(batch) == 8
    assert sorted(i for i, _ in batch[:6]) == [0, 0, 1, 1, 2, 2]


def test_ranks_split_the_single_process_batch():
    single = ShardedBatchOrder(17, 4, seed=3)
    ranks = [ShardedBatchOrder(17, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for iteration in range(10):
        combined = ranks[0].rank_batch(iteration) + ranks[1].rank_batch(iteration)
        assert combined == single.global_batch(iteration)  # same samples and augmentation seeds


def test_resume_continues_the_same_sequence():
    straight = _take(ShardedBatchOrder(11, 2, seed=9, stop_iteration=20), 20)
    resumed = _take(ShardedBatchOrder(11, 2, seed=9, start_iteration=13, stop_iteration=20), 20)
    assert len(resumed) == 7
    assert resumed == straight[13:]


def test_different_seeds_give_different_orders_and_sample_seeds_are_unique():
    a = [b for b in _take(ShardedBatchOrder(50, 5, seed=0), 10)]
    b = [b for b in _take(ShardedBatchOrder(50, 5, seed=1), 10)]
    assert a != b
    seeds = [s for batch in a for _, s in batch]
    assert len(set(seeds)) == len(seeds)


def test_bad_batch_sizes():
    with pytest.raises(ValueError, match="multiple of the world size"):
        ShardedBatchOrder(10, 3, world_size=2)
    with pytest.raises(ValueError, match="empty"):
        ShardedBatchOrder(0, 2)


class _RandomDataset(torch.utils.data.Dataset):
    """Draws from all three global generators, like an augmenting dataset does."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.tensor([index, random.random(), float(np.random.rand()), float(torch.rand(()))])


def test_seeded_samples_repeat_and_leave_the_caller_stream_alone():
    dataset = SeededSamples(_RandomDataset())
    torch.manual_seed(0)
    first = dataset[(2, 1234)]
    after_first = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(dataset[(2, 1234)], first)  # same seed -> same augmentation
    assert torch.equal(torch.rand(3), after_first)  # the caller's stream did not move
    assert not torch.equal(dataset[(2, 99)], first)


def test_loader_with_workers_equals_loader_without():
    def load(num_workers):
        order = ShardedBatchOrder(4, 2, seed=7, stop_iteration=6)
        loader = torch.utils.data.DataLoader(SeededSamples(_RandomDataset()), batch_sampler=order,
                                             num_workers=num_workers,
                                             worker_init_fn=make_worker_init_fn(7, 0, 0) if num_workers else None)
        return torch.cat(list(loader))

    assert torch.equal(load(0), load(2))


def test_worker_seeds_depend_on_every_part():
    base = worker_seed(0, 0, 0, 0)
    assert len({base, worker_seed(1, 0, 0, 0), worker_seed(0, 1, 0, 0), worker_seed(0, 0, 1, 0),
                worker_seed(0, 0, 0, 1)}) == 5
