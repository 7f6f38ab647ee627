"""BatchCollator and the samplers: grouped, iteration based, distributed, training."""
import pytest
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from fcos_core.data.collate_batch import BatchCollator
from fcos_core.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
    TrainingSampler,
)
from fcos_core.structures.bounding_box import BoxList


def test_collate_pads_to_size_divisibility():
    batch = [(torch.ones(3, 33, 50), BoxList(torch.zeros(0, 4), (50, 33)), 4),
             (torch.ones(3, 40, 20), BoxList(torch.zeros(1, 4), (20, 40)), 7)]
    images, targets, ids = BatchCollator(size_divisible=32)(batch)
    assert images.tensors.shape == (2, 3, 64, 64)
    assert images.image_sizes == [(33, 50), (40, 20)]
    assert images.tensors[0, :, 33:].abs().sum() == 0 and images.tensors[1, :, :, 20:].abs().sum() == 0
    assert targets == (batch[0][1], batch[1][1]) and ids == (4, 7)
    assert BatchCollator(0)(batch)[0].tensors.shape == (2, 3, 40, 50)


def test_grouped_batches_share_group_and_follow_sampler_order():
    group_ids = [0, 1, 0, 1, 1, 0, 0, 1, 0]
    sampler = GroupedBatchSampler(SequentialSampler(range(9)), group_ids, batch_size=2)
    batches = list(sampler)
    assert batches == [[0, 2], [1, 3], [4, 7], [5, 6], [8]]
    assert len(sampler) == 5
    for batch in batches:
        assert len({group_ids[i] for i in batch}) == 1
    assert sorted(i for b in batches for i in b) == list(range(9))
    dropped = GroupedBatchSampler(SequentialSampler(range(9)), group_ids, 2, drop_uneven=True)
    assert [len(b) for b in dropped] == [2, 2, 2, 2]


def test_grouped_len_then_iter_gives_the_same_random_batches():
    sampler = GroupedBatchSampler(torch.utils.data.RandomSampler(range(50)), [i % 3 for i in range(50)], 4)
    n = len(sampler)
    batches = list(sampler)
    assert len(batches) == n and sorted(i for b in batches for i in b) == list(range(50))


def test_iteration_based_yields_exactly_the_remaining_iterations():
    inner = BatchSampler(SequentialSampler(range(5)), batch_size=2, drop_last=False)  # 3 batches/epoch
    batches = list(IterationBasedBatchSampler(inner, num_iterations=7))
    assert len(batches) == 7 and batches[:4] == [[0, 1], [2, 3], [4], [0, 1]]
    resumed = IterationBasedBatchSampler(inner, num_iterations=7, start_iter=4)
    assert len(list(resumed)) == 3 and len(resumed) == 7
    assert list(IterationBasedBatchSampler(inner, 4, start_iter=4)) == []


def test_iteration_based_sets_the_epoch():
    dist = DistributedSampler(range(8), num_replicas=2, rank=0, shuffle=True)
    inner = BatchSampler(dist, batch_size=4, drop_last=False)
    list(IterationBasedBatchSampler(inner, num_iterations=3))
    assert dist.epoch == 2  # set_epoch(epoch) before each pass: one batch per epoch, epochs 0, 1, 2
    inner = BatchSampler(DistributedSampler(range(8), num_replicas=2, rank=0), batch_size=2, drop_last=False)
    list(IterationBasedBatchSampler(inner, num_iterations=5))
    assert inner.sampler.epoch == 2  # two batches per epoch: iterations 1-2, 3-4, 5


def _pairs(batches):
    """(index, augmentation seed) of every sample of every batch."""
    return [[(int(i), i.seed) for i in batch] for batch in batches]


@pytest.mark.parametrize("grouped", [False, True])
def test_resuming_yields_the_batches_of_an_uninterrupted_run(grouped):
    def batches(start_iter):
        sampler = TrainingSampler(range(11), num_replicas=1, rank=0, seed=3)  # 11 images, batch 3
        if grouped:
            inner = GroupedBatchSampler(sampler, [i % 2 for i in range(11)], 3)
        else:
            inner = BatchSampler(sampler, 3, drop_last=False)
        return _pairs(IterationBasedBatchSampler(inner, num_iterations=13, start_iter=start_iter))

    full = batches(0)
    assert len(full) == 13
    # several epochs, each a new order with new augmentation seeds
    assert sorted(full[0] + full[1] + full[2] + full[3]) != sorted(full[4] + full[5] + full[6] + full[7])
    for start_iter in range(13):
        assert batches(start_iter) == full[start_iter:], start_iter


def test_training_sampler_global_batches_do_not_depend_on_the_number_of_processes():
    def global_batches(world, n=12, batch=4, iterations=7):
        per_rank = []
        for rank in range(world):
            sampler = TrainingSampler(range(n), num_replicas=world, rank=rank, seed=7)
            inner = BatchSampler(sampler, batch // world, drop_last=False)
            per_rank.append(_pairs(IterationBasedBatchSampler(inner, iterations)))
        return [sorted(sum(parts, [])) for parts in zip(*per_rank)]

    one = global_batches(1)
    assert global_batches(2) == one and global_batches(4) == one
    # every index once per epoch, each with a seed of its own
    first_epoch = sum(one[:3], [])
    assert sorted(i for i, _ in first_epoch) == list(range(12))
    assert len({s for _, s in first_epoch}) == 12


def test_training_sampler_shares_and_seeds():
    shares = [list(TrainingSampler(range(7), num_replicas=3, rank=r, seed=1)) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert set(int(i) for s in shares for i in s) == set(range(7))  # 9 = 7 + the start repeated
    other_seed = list(TrainingSampler(range(7), num_replicas=3, rank=0, seed=2))
    assert _pairs([other_seed]) != _pairs([shares[0]])
    with pytest.raises(ValueError, match="rank 3"):
        TrainingSampler(range(7), num_replicas=3, rank=3)


def test_distributed_split_disjoint_and_covering():
    shares = [list(DistributedSampler(range(12), num_replicas=3, rank=r, shuffle=True, seed=5)) for r in range(3)]
    assert all(len(s) == 4 for s in shares)
    assert sorted(sum(shares, [])) == list(range(12))
    # same seed and epoch, same order; another epoch, another order
    again = DistributedSampler(range(12), num_replicas=3, rank=0, shuffle=True, seed=5)
    assert list(again) == shares[0]
    again.set_epoch(1)
    assert list(again) != shares[0]
    # uneven: equal lengths, everything covered (the start repeats as padding)
    uneven = [list(DistributedSampler(range(10), num_replicas=4, rank=r, shuffle=False)) for r in range(4)]
    assert [len(s) for s in uneven] == [3, 3, 3, 3] and set(sum(uneven, [])) == set(range(10))
    assert uneven[0] == [0, 1, 2]
    tiny = [list(DistributedSampler(range(2), num_replicas=5, rank=r, shuffle=False)) for r in range(5)]
    assert tiny == [[0], [1], [0], [1], [0]]
