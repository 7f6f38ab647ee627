"""Several datasets read as one (training on e.g. coco_2014_train + coco_2014_valminusminival)."""
import bisect
from collections import Counter

from torch.utils.data import ConcatDataset as _TorchConcatDataset

from fcos_core.utils.rng import seeded_getitem


class ConcatDataset(_TorchConcatDataset):
    """``torch.utils.data.ConcatDataset`` that also answers ``get_img_info`` and ``skipped``.

    ``dataset[i]`` is the sample of the dataset that global index ``i`` falls in; its third element
    is the index inside that dataset (as in the original). A :class:`~fcos_core.utils.rng.SeededIndex`
    seeds the sample's augmentation as in the other datasets.
    """

    @seeded_getitem
    def __getitem__(self, idx):
        return super().__getitem__(int(idx))

    def get_idxs(self, idx):
        """(dataset index, sample index inside that dataset) of global index ``idx`` (>= 0)."""
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        sample_idx = idx if dataset_idx == 0 else idx - self.cumulative_sizes[dataset_idx - 1]
        return dataset_idx, sample_idx

    def get_img_info(self, idx):
        """``get_img_info`` of the underlying dataset: dict with at least "height" and "width"."""
        dataset_idx, sample_idx = self.get_idxs(idx)
        return self.datasets[dataset_idx].get_img_info(sample_idx)

    @property
    def class_names(self):
        """``class_names`` of the first dataset; the datasets must agree (same labels, same names).

        Raises:
            ValueError: two datasets name their classes differently.
        """
        names = [list(getattr(d, "class_names", None) or []) for d in self.datasets]
        for d, other in zip(self.datasets[1:], names[1:]):
            if other != names[0]:
                raise ValueError("datasets trained together name their classes differently: {} has {}, {} has {}"
                                 .format(self.datasets[0], names[0], d, other))
        return names[0]

    @property
    def skipped(self):
        """Sum of the ``skipped`` Counters of the datasets."""
        total = Counter()
        for dataset in self.datasets:
            total.update(getattr(dataset, "skipped", None) or Counter())
        return total
