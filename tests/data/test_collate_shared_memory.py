"""BatchCollator / to_image_list: the padded batch is built in shared memory in a DataLoader worker (no
second copy on the way to the main process) and equals the batch built in the main process."""
import torch

from fcos_core.data.collate_batch import BatchCollator
from fcos_core.structures import image_list as IL


def _images():
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(3, 5, 7, generator=gen), torch.rand(3, 6, 4, generator=gen), torch.rand(3, 2, 9, generator=gen)]


def test_only_the_padding_is_zeroed_and_every_pad_is(monkeypatch):
    real = IL._new_batch
    monkeypatch.setattr(IL, "_new_batch", lambda like, shape, shared: real(like, shape, shared).fill_(float("nan")))
    for shared in (False, True):
        batch = IL.to_image_list(_images(), size_divisible=4, shared_memory=shared)
        assert batch.tensors.shape == (3, 3, 8, 12) and not torch.isnan(batch.tensors).any()
        for img, padded in zip(_images(), batch.tensors):
            c, h, w = img.shape
            expected = torch.zeros_like(padded)
            expected[:c, :h, :w] = img
            assert torch.equal(padded, expected)  # the image in its corner, 0 everywhere else
        assert batch.tensors.is_shared() == shared


def test_shared_and_private_batches_are_equal():
    private = IL.to_image_list(_images(), 32).tensors
    shared = IL.to_image_list(_images(), 32, shared_memory=True).tensors
    assert torch.equal(private, shared) and shared.is_shared() and not private.is_shared()
    assert shared.is_contiguous() and shared.dtype == private.dtype


class _Samples(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return _images()[i % 3], "target{}".format(i), i


class _Probe(BatchCollator):
    """BatchCollator that also says whether its batch was in shared memory where it was made."""

    def __call__(self, batch):
        images, targets, indices = super().__call__(batch)
        return images, targets, indices, images.tensors.is_shared()


def test_in_a_worker_the_batch_is_made_in_shared_memory():
    made = {}
    for workers in (0, 1):
        loader = torch.utils.data.DataLoader(_Samples(), batch_size=2, num_workers=workers, collate_fn=_Probe(8))
        made[workers] = list(loader)
    for (a, ta, ia, shared_main), (b, tb, ib, shared_worker) in zip(made[0], made[1]):
        assert not shared_main and shared_worker
        assert torch.equal(a.tensors, b.tensors) and a.image_sizes == b.image_sizes
        assert ta == tb and ia == ib
