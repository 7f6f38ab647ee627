"""The training sampler: the same global order of samples whatever the number of processes."""
import math

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from fcos_core.utils.comm import get_rank, get_world_size
from fcos_core.utils.rng import SeededIndex


class TrainingSampler(Sampler):
    """This process's share of one epoch of a seeded random order, as :class:`SeededIndex` values.

    Epoch ``e`` is a permutation of the dataset drawn from ``(seed, e)``, each position with its
    own augmentation seed drawn from the same generator. The permutation is padded by repeating its
    start to a multiple of ``num_replicas`` and process ``rank`` takes every ``num_replicas``-th
    position from ``rank`` on. So with B / num_replicas images per process, the global batch ``t``
    of an epoch is positions ``[t * B, (t + 1) * B)``: the same images with the same augmentation
    in a 1-process run with batch B and in an N-process run with batch B / N each.

    Arguments:
        dataset: anything with ``len``.
        num_replicas (int or None): number of processes (default: the world size).
        rank (int or None): this process (default: its rank).
        seed (int): base of the order; must be the same in every process.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, seed=0):
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError("rank {} is not in [0, {})".format(self.rank, self.num_replicas))
        if len(dataset) == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0
        self.num_samples = int(math.ceil(len(dataset) / self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def _generator(self):
        # SeedSequence mixes (seed, epoch) so that nearby seeds give unrelated epochs
        entropy = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2, np.uint32)
        g = torch.Generator()
        g.manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
        return g

    def __iter__(self):
        g = self._generator()
        n = len(self.dataset)
        order = torch.randperm(n, generator=g).tolist()
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=g).tolist()
        positions = [p % n for p in range(self.total_size)]  # padding repeats the start
        mine = positions[self.rank::self.num_replicas]
        return iter([SeededIndex(order[p], seeds[p]) for p in mine])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Use the order of ``epoch`` (call with the same value in every process)."""
        self.epoch = int(epoch)
