"""Batches whose images all belong to one group (e.g. landscape or portrait)."""
from torch.utils.data.sampler import Sampler


class GroupedBatchSampler(Sampler):
    """Mini-batches of indices from ``sampler`` in which every index has the same group id.

    Grouping images by aspect ratio (landscape with landscape) wastes less padding. Inside a group the
    indices keep the sampler's order; the batches are ordered by where their first index came in
    the sampler, so the overall order stays close to the sampler's. Each group's last batch may be
    smaller than ``batch_size`` unless ``drop_uneven``.

    Arguments:
        sampler (Sampler): yields dataset indices (may cover only part of the dataset).
        group_ids (sequence of int): group of each dataset index.
        batch_size (int): images per batch.
        drop_uneven (bool): leave out the batches smaller than ``batch_size``.
    """

    def __init__(self, sampler, group_ids, batch_size, drop_uneven=False):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1, got {}".format(batch_size))
        self.sampler = sampler
        self.group_ids = [int(g) for g in group_ids]
        self.batch_size = batch_size
        self.drop_uneven = drop_uneven
        # (sampler epoch, batches) computed by __len__, handed to the next __iter__ of that epoch
        self._cached = None

    def _prepare_batches(self):
        open_batches, batches = {}, []
        for index in self.sampler:
            group = self.group_ids[index]
            batch = open_batches.get(group)
            if batch is None:
                # the batch takes its place in the output when its first index arrives
                batch = open_batches[group] = []
                batches.append(batch)
            batch.append(index)
            if len(batch) == self.batch_size:
                del open_batches[group]
        if self.drop_uneven:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches

    def _epoch(self):
        return getattr(self.sampler, "epoch", None)

    def __iter__(self):
        # __len__ had to draw from the sampler (a random one draws anew each time): reuse that draw
        # unless the sampler moved to another epoch since
        cached, self._cached = self._cached, None
        if cached is not None and cached[0] == self._epoch():
            return iter(cached[1])
        return iter(self._prepare_batches())

    def __len__(self):
        if self._cached is None or self._cached[0] != self._epoch():
            self._cached = (self._epoch(), self._prepare_batches())
        return len(self._cached[1])
