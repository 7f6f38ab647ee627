"""Photometric augmentations: exact pixel maths, bounds, boxes untouched, seeded reproducibility."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_core.data.transforms import (PhotoMetricDistortion, RandomGaussianBlur, RandomGaussianNoise,
                                       RandomJPEGCompression)
from fcos_core.data.transforms.photometric import (adjust_brightness, adjust_contrast, adjust_saturation_hue,
                                                   add_gaussian_noise, jpeg_roundtrip)
from fcos_core.structures.bounding_box import BoxList
from fcos_core.utils.rng import seeded_rng


def _image(width=48, height=32, seed=0):
    """A smooth colour image (so that JPEG and blur change it moderately) with a sharp square."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs * 4, ys * 6, 255 - xs * 3], axis=-1) + rng.normal(0, 3, (height, width, 3))
    base[8:20, 10:30] = (250, 20, 30)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _target():
    target = BoxList(torch.tensor([[10.0, 8.0, 29.0, 19.0]]), (48, 32))
    target.add_field("labels", torch.tensor([3]))
    return target


def _array(image):
    return np.asarray(image).astype(np.int32)


def test_brightness_and_contrast_are_exact_and_clipped():
    array = np.array([[[0, 100, 250]]], np.uint8)
    assert adjust_brightness(array, 10).tolist() == [[[10, 110, 255]]]
    assert adjust_brightness(array, -20.4).tolist() == [[[0, 80, 230]]]  # rounded
    assert adjust_contrast(array, 1.5).tolist() == [[[0, 150, 255]]]
    assert adjust_contrast(array, 0.5).dtype == np.uint8


def test_saturation_and_hue():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    # 8-bit HSV round trip: within a few levels
    assert np.abs(adjust_saturation_hue(array, 1.0, 0.0).astype(int) - array).max() <= 4
    assert np.abs(adjust_saturation_hue(array, 1.0, 360.0).astype(int) - array).max() <= 4  # a full turn
    grey = adjust_saturation_hue(array, 0.0, 0.0)
    assert np.array_equal(grey[..., 0], array.max(axis=-1)) and (grey == grey[..., :1]).all()  # all at V
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert adjust_saturation_hue(red, 1.0, 120.0).tolist() == [[[0, 255, 0]]]  # red -> green
    assert adjust_saturation_hue(red, 1.0, -120.0).tolist() == [[[0, 0, 255]]]  # red -> blue
    pale = np.array([[[200, 150, 150]]], np.uint8)
    saturated = adjust_saturation_hue(pale, 3.0, 0.0)  # saturation x3 (8-bit HSV: within a level), V kept
    assert saturated[0, 0, 0] == 200 and np.abs(saturated.astype(int) - [200, 50, 50]).max() <= 1
    assert adjust_saturation_hue(np.full((1, 1, 3), 128, np.uint8), 1.5, 180.0).tolist() == [[[128, 128, 128]]]


def test_photometric_distortion_within_bounds_and_boxes_unchanged():
    image, target = _image(), _target()
    brightness_only = PhotoMetricDistortion(brightness_delta=20, contrast_range=(1, 1), saturation_range=(1, 1),
                                            hue_delta=0)
    changed = 0
    for seed in range(20):
        with seeded_rng(seed):
            out, out_target = brightness_only(image, target)
        diff = _array(out) - _array(image)
        assert out_target is target and out.size == image.size
        unclipped = (_array(image) > 25) & (_array(image) < 230)
        assert np.abs(diff).max() <= 20 and len(np.unique(diff[unclipped])) <= 1  # one delta for all pixels
        changed += bool(np.any(diff))
    assert 3 <= changed <= 17  # the brightness step runs with probability 0.5
    with seeded_rng(0):
        assert PhotoMetricDistortion(prob=0.0)(image, target)[0] is image


def test_photometric_distortion_changes_colours_and_is_seeded():
    image, target = _image(), _target()
    distortion = PhotoMetricDistortion()
    outputs = []
    for seed in (3, 3, 4):
        with seeded_rng(seed):
            outputs.append(_array(distortion(image, target)[0]))
    assert np.array_equal(outputs[0], outputs[1]) and not np.array_equal(outputs[0], outputs[2])
    assert "brightness_delta=32.0" in repr(distortion) and "hue_delta=18.0" in repr(distortion)
    with pytest.raises(ValueError, match="hue_delta"):
        PhotoMetricDistortion(hue_delta=200)
    with pytest.raises(ValueError, match="contrast_range"):
        PhotoMetricDistortion(contrast_range=(1.5, 0.5))


def test_blur_smooths_and_keeps_flat_images():
    image, target = _image(), _target()
    with seeded_rng(1):
        out, out_target = RandomGaussianBlur((1.5, 2.0), prob=1.0)(image, target)
    assert out_target is target and out.size == image.size
    edges = lambda a: np.abs(np.diff(a, axis=1)).sum()  # noqa: E731
    assert edges(_array(out)) < 0.7 * edges(_array(image))
    flat = Image.new("RGB", (20, 10), (40, 90, 200))
    assert np.array_equal(_array(RandomGaussianBlur(prob=1.0)(flat, target)[0]), _array(flat))
    assert "sigma_range=(0.1, 2.0)" in repr(RandomGaussianBlur())


def test_noise_has_the_drawn_std_and_is_seeded():
    flat = Image.new("RGB", (200, 100), (128, 128, 128))
    target = _target()
    noise = RandomGaussianNoise((5.0, 5.0), prob=1.0)
    with seeded_rng(2):
        first, out_target = noise(flat, target)
    with seeded_rng(2):
        again, _ = noise(flat, target)
    diff = _array(first) - 128
    assert out_target is target and np.array_equal(_array(first), _array(again))
    assert abs(diff.std() - 5.0) < 0.3 and abs(diff.mean()) < 0.3 and np.abs(diff).max() <= 5 * 6
    bright = np.full((10, 10, 3), 254, np.uint8)
    noisy = add_gaussian_noise(bright, 50.0, torch.Generator().manual_seed(0))
    assert noisy.dtype == np.uint8 and noisy.max() == 255 and noisy.min() < 200  # clipped, not wrapped


def test_jpeg_recompression_degrades_with_quality_and_is_seeded():
    image, target = _image(), _target()
    error = {q: np.abs(_array(jpeg_roundtrip(image, q)) - _array(image)).mean() for q in (10, 95)}
    assert 0 < error[95] < error[10]
    jpeg = RandomJPEGCompression((20, 30), prob=1.0)
    with seeded_rng(5):
        first, out_target = jpeg(image, target)
    with seeded_rng(5):
        again, _ = jpeg(image, target)
    assert out_target is target and first.size == image.size and first.mode == "RGB"
    assert np.array_equal(_array(first), _array(again))
    with pytest.raises(ValueError, match="quality_range"):
        RandomJPEGCompression((0, 50))
    with pytest.raises(ValueError, match="quality_range"):
        RandomJPEGCompression((20.5, 50))


@pytest.mark.parametrize("transform", [PhotoMetricDistortion(), RandomGaussianBlur(), RandomGaussianNoise(),
                                       RandomJPEGCompression()])
def test_probability_and_type_checks(transform):
    image, target = _image(), _target()
    random.seed(0)
    hits = 0
    for _ in range(40):
        transform.prob = 0.5
        out, _ = transform(image, target)
        hits += out is not image
    assert 8 <= hits <= 32  # applied to about half of the images
    transform.prob = 1.0
    with pytest.raises(TypeError, match="PIL image"):
        transform(torch.zeros(3, 4, 4), target)
    with pytest.raises(ValueError, match="prob"):
        type(transform)(prob=1.5)
