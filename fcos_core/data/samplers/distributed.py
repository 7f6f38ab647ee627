"""Sampler giving each process of a distributed run its own share of a dataset."""
import math

import torch
from torch.utils.data.sampler import Sampler

from fcos_core.utils.comm import get_rank, get_world_size


class DistributedSampler(Sampler):
    """The indices of one process: a 1/num_replicas share of the dataset, disjoint from the others.

    The index list (shuffled with seed ``seed + epoch`` when ``shuffle``, the same in every
    process) is padded by repeating its start to a multiple of ``num_replicas``, then process
    ``rank`` takes the contiguous block ``[rank * n, (rank + 1) * n)``. So the shares cover the
    dataset, have equal length ``n = ceil(N / num_replicas)`` and are disjoint when N divides evenly.

    Arguments:
        dataset: anything with ``len``.
        num_replicas (int or None): number of processes (default: the world size).
        rank (int or None): this process (default: its rank).
        shuffle (bool): new order each epoch (call :meth:`set_epoch`).
        seed (int): base of the shuffling seed; must be the same in every process.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0):
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError("rank {} is not in [0, {})".format(self.rank, self.num_replicas))
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(math.ceil(len(dataset) / self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        while len(indices) < self.total_size:  # a loop: padding may exceed N for tiny datasets
            indices += indices[: self.total_size - len(indices)]
        start = self.num_samples * self.rank
        return iter(indices[start:start + self.num_samples])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Use the order of ``epoch`` (call with the same value in every process)."""
        self.epoch = epoch
