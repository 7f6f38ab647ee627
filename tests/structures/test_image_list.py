"""to_image_list: padding, size_divisible, image sizes (h, w)."""
import pytest
import torch

from fcos_core.structures import ImageList, to_image_list


def test_list_is_padded_bottom_right_with_zeros():
    a = torch.rand(3, 5, 7) + 1
    b = torch.rand(3, 8, 4) + 1
    il = to_image_list([a, b])
    assert il.tensors.shape == (2, 3, 8, 7)
    assert il.image_sizes == [(5, 7), (8, 4)]
    assert torch.equal(il.tensors[0, :, :5, :7], a)
    assert torch.equal(il.tensors[1, :, :8, :4], b)
    assert il.tensors[0, :, 5:].abs().sum() == 0 and il.tensors[1, :, :, 4:].abs().sum() == 0


def test_size_divisible_rounds_up():
    il = to_image_list((torch.ones(3, 33, 64), torch.ones(3, 20, 65)), size_divisible=32)
    assert il.tensors.shape == (2, 3, 64, 96)
    assert il.image_sizes == [(33, 64), (20, 65)]
    assert il.tensors[0].sum() == 3 * 33 * 64


def test_single_tensor_3d_and_4d():
    il = to_image_list(torch.ones(3, 10, 12))
    assert il.tensors.shape == (1, 3, 10, 12) and il.image_sizes == [(10, 12)]
    batch = torch.ones(2, 3, 10, 12)
    il = to_image_list(batch)
    assert il.tensors is batch and il.image_sizes == [(10, 12), (10, 12)]
    il = to_image_list(batch, size_divisible=8)
    assert il.tensors.shape == (2, 3, 16, 16) and il.image_sizes == [(10, 12), (10, 12)]
    assert to_image_list(torch.ones(3, 10, 12), size_divisible=8).tensors.shape == (1, 3, 16, 16)


def test_image_list_passes_through_and_to():
    il = to_image_list([torch.ones(1, 2, 2, dtype=torch.float64)])
    assert to_image_list(il) is il
    moved = il.to(torch.float32)
    assert isinstance(moved, ImageList) and moved.tensors.dtype == torch.float32
    assert moved.image_sizes == il.image_sizes


def test_errors():
    with pytest.raises(TypeError):
        to_image_list(3)
    with pytest.raises(ValueError):
        to_image_list([])
    with pytest.raises(ValueError):
        to_image_list(torch.ones(2, 2))
