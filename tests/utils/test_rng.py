"""Per-sample seeding of random augmentation (fcos_core.utils.rng)."""
import pickle
import random

import numpy as np
import torch

from fcos_core.data.datasets.concat_dataset import ConcatDataset
from fcos_core.utils.rng import SeededIndex, seeded_getitem, seeded_rng


class _RandomDataset(torch.utils.data.Dataset):
    """dataset[i] = (i, one draw of each generator), as a random transform would make them."""

    def __len__(self):
        return 4

    @seeded_getitem
    def __getitem__(self, index):
        return int(index), random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seeded_index_is_an_int_that_keeps_its_seed_through_pickle():
    i = SeededIndex(3, 99)
    assert i == 3 and [10, 11, 12, 13][i] == 13 and i + 1 == 4
    back = pickle.loads(pickle.dumps(i))
    assert isinstance(back, SeededIndex) and (int(back), back.seed) == (3, 99)


def test_seeded_rng_restores_the_callers_streams():
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    with seeded_rng(5):
        inside = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    with seeded_rng(5):
        assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == inside


def test_seeded_getitem_depends_on_the_seed_only():
    dataset = _RandomDataset()
    a = dataset[SeededIndex(1, 7)]
    random.random(), torch.rand(3)  # whatever happened in between
    assert dataset[SeededIndex(1, 7)] == a
    assert dataset[SeededIndex(1, 8)][1:] != a[1:]
    # a plain index draws from the process's own streams
    assert dataset[1] != dataset[1]


def test_concat_dataset_hands_the_seed_on():
    concat = ConcatDataset([_RandomDataset(), _RandomDataset()])
    assert concat[SeededIndex(6, 7)] == _RandomDataset()[SeededIndex(2, 7)]
    assert concat[SeededIndex(6, 7)] == concat[SeededIndex(6, 7)]
