"""Samplers: seeded training order, distributed test shares, aspect-ratio grouped batches,
iteration-based training."""
from .distributed import DistributedSampler
from .grouped_batch_sampler import GroupedBatchSampler
from .iteration_based_batch_sampler import IterationBasedBatchSampler
from .training import TrainingSampler

__all__ = ["DistributedSampler", "GroupedBatchSampler", "IterationBasedBatchSampler", "TrainingSampler"]
