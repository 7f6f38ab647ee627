"""Transforms: resize rule and exact box scaling, flips, normalisation, the config pipeline."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_core.config import load_config
from fcos_core.data.transforms import (ColorJitter, Normalize, RandomHorizontalFlip, Resize, ToTensor,
                                       build_transforms)
from fcos_core.structures.bounding_box import BoxList


def _sample(width=64, height=48):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    target = BoxList(torch.tensor([[0.0, 1.0, 10.0, 20.0], [30.5, 4.0, 63.0, 47.0]]), image.size)
    target.add_field("labels", torch.tensor([1, 2]))
    return image, target


@pytest.mark.parametrize("wh, min_size, max_size, expected_hw", [
    ((640, 480), 800, 1333, (800, 1066)),      # short side to 800: long = int(800 * 640 / 480)
    ((480, 640), 800, 1333, (1066, 800)),
    # long side would be 3200 > 1333: short = round(1333 / 4) = 333, long = int(333 * 4) (truncated)
    ((2000, 500), 800, 1333, (333, 1332)),
    ((500, 500), 500, 1333, (500, 500)),       # already the right size
    ((300, 200), 100, None, (100, 150)),
])
def test_resize_size_rule(wh, min_size, max_size, expected_hw):
    assert Resize(min_size, max_size).get_size(wh) == expected_hw


def test_resize_scales_boxes_exactly():
    image, target = _sample(64, 48)
    out_image, out = Resize(96, 1000)(image, target)
    assert out_image.size == (128, 96) == out.size
    assert torch.equal(out.bbox, target.bbox * 2)
    assert torch.equal(out.get_field("labels"), target.get_field("labels"))
    assert Resize(24, None)(image).size == (32, 24)  # image only


def test_resize_picks_among_min_sizes():
    random.seed(0)
    sizes = {Resize((10, 20, 30), None).get_size((100, 50))[0] for _ in range(50)}
    assert sizes == {10, 20, 30}


def test_flip_twice_is_identity_and_mirrors_pixels_and_boxes():
    image, target = _sample()
    flip = RandomHorizontalFlip(1.0)
    once_image, once = flip(image, target)
    twice_image, twice = flip(once_image, once)
    assert np.array_equal(np.asarray(twice_image), np.asarray(image))
    assert torch.equal(twice.bbox, target.bbox)
    assert np.array_equal(np.asarray(once_image)[:, ::-1], np.asarray(image))
    assert once.bbox[0].tolist() == [53.0, 1.0, 63.0, 20.0]  # x' = W - 1 - x
    same_image, same = RandomHorizontalFlip(0.0)(image, target)
    assert same_image is image and torch.equal(same.bbox, target.bbox)


def test_normalize_bgr255_and_rgb01():
    image = torch.tensor([0.1, 0.5, 1.0]).view(3, 1, 1).expand(3, 2, 2)
    bgr, target = Normalize(mean=[100.0, 110.0, 120.0], std=[1.0, 1.0, 2.0], to_bgr255=True)(image, "t")
    assert target == "t"
    assert torch.allclose(bgr[:, 0, 0], torch.tensor([255.0 - 100, 127.5 - 110, (25.5 - 120) / 2]))
    rgb = Normalize(mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5], to_bgr255=False)(image)
    assert torch.allclose(rgb[:, 0, 0], torch.tensor([0.0, 0.6, 1.4]))


def test_to_tensor_rgb01_and_color_jitter_keeps_boxes():
    image, target = _sample()
    tensor, same = ToTensor()(image, target)
    assert tensor.shape == (3, 48, 64) and tensor.max() <= 1.0
    assert torch.allclose(tensor[:, 3, 5] * 255, torch.tensor(np.asarray(image)[3, 5], dtype=torch.float32))
    jittered, out = ColorJitter(brightness=0.5)(image, target)
    assert jittered.size == image.size and out is target


def _cfg(*opts):
    return load_config(opts=list(opts))


def test_build_transforms_default_is_bgr255_minus_mean():
    image, target = _sample()
    cfg = _cfg("INPUT.MIN_SIZE_TEST", 48, "INPUT.MAX_SIZE_TEST", 1000)
    tensor, out = build_transforms(cfg, is_train=False)(image, target)
    pixel = np.asarray(image)[0, 0].astype(np.float32)  # RGB
    expected = torch.tensor(pixel[::-1].copy()) - torch.tensor(cfg.INPUT.PIXEL_MEAN)
    assert torch.allclose(tensor[:, 0, 0], expected, atol=1e-4) and torch.equal(out.bbox, target.bbox)


def test_build_transforms_train_options():
    cfg = _cfg("INPUT.MIN_SIZE_RANGE_TRAIN", (20, 23), "INPUT.BRIGHTNESS", 0.2)
    names = [type(t).__name__ for t in build_transforms(cfg, True).transforms]
    assert names == ["ColorJitter", "Resize", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert build_transforms(cfg, True).transforms[1].min_size == (20, 21, 22, 23)
    names = [type(t).__name__ for t in build_transforms(_cfg(), True).transforms]
    assert names == ["Resize", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    names = [type(t).__name__ for t in build_transforms(cfg, False).transforms]
    assert names == ["Resize", "ToTensor", "Normalize"]
    with pytest.raises(ValueError, match="MIN_SIZE_RANGE_TRAIN"):
        build_transforms(_cfg("INPUT.MIN_SIZE_RANGE_TRAIN", (30, 20)), True)
