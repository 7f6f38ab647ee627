"""BatchCollator and the samplers: grouped, iteration based, distributed."""
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from fcos_core.data.collate_batch import BatchCollator
from fcos_core.data.samplers import DistributedSampler, GroupedBatchSampler, IterationBasedBatchSampler
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
    assert dist.epoch == 2  # set_epoch(iteration) before each pass: passes start at 0, 1, 2


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
