"""Batching of dataset samples for the DataLoader."""
import torch

from fcos_core.structures.image_list import to_image_list


class BatchCollator(object):
    """``collate_fn``: a list of (image [3, H_i, W_i], target BoxList, index) samples -> one batch.

    Returns ``(images, targets, indices)``: an ImageList zero-padded at the bottom/right to the
    largest H and W rounded up to a multiple of ``size_divisible`` (DATALOADER.SIZE_DIVISIBILITY,
    0 = no rounding), a tuple of the targets and a tuple of the indices. In a DataLoader worker the
    padded batch is allocated in shared memory, as ``default_collate`` does: otherwise it would be
    copied there once more to reach the main process (the loader benchmark, docs/benchmark.md).
    """

    def __init__(self, size_divisible=0):
        self.size_divisible = size_divisible

    def __call__(self, batch):
        images, targets, indices = zip(*batch)
        in_worker = torch.utils.data.get_worker_info() is not None
        return to_image_list(images, self.size_divisible, shared_memory=in_worker), targets, indices
