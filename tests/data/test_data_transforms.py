"""Transforms: resize rule and exact box scaling, flips, normalisation, random crop and scale jitter
(exact box geometry), the config pipeline and its key checks."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_core.config import load_config
from fcos_core.data.transforms import (ColorJitter, Normalize, RandomCrop, RandomHorizontalFlip, Resize, ToTensor,
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


# ----------------------------------------------------------------------------- crop and scale jitter
def _boxes_sample(boxes, width=100, height=80):
    image = Image.fromarray(np.arange(height * width * 3, dtype=np.uint32).reshape(height, width, 3).astype(np.uint8))
    target = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), (width, height))
    target.add_field("labels", torch.arange(1, len(target) + 1))
    return image, target


class _FixedWindow(RandomCrop):
    """RandomCrop whose windows are given in order (to test the box rule exactly)."""

    def __init__(self, windows, **kwargs):
        super().__init__((0.5, 0.5), **kwargs)
        self.windows = list(windows)

    def get_window(self, width, height):
        return self.windows.pop(0)


def test_random_crop_keeps_boxes_by_centre_and_clips_them():
    # centres: (15, 15) inside, (55, 45) inside (box sticks out), (75, 70) outside, (39, 15) on the last pixel
    image, target = _boxes_sample([[10, 10, 20, 20], [50, 30, 60, 60], [70, 60, 80, 80], [38, 10, 40, 20]])
    crop = _FixedWindow([(5, 8, 45, 58)], prob=1.0)  # pixels x 5..44, y 8..57
    out_image, out = crop(image, target)
    assert out_image.size == (40, 50) == out.size
    assert np.array_equal(np.asarray(out_image), np.asarray(image)[8:58, 5:45])
    # shifted by (-5, -8), clipped to [0, 39] x [0, 49]; the box centred at x = 55 is gone
    assert out.bbox.tolist() == [[5, 2, 15, 12], [33, 2, 35, 12]]
    assert out.get_field("labels").tolist() == [1, 4]
    assert target.bbox.shape == (4, 4)  # input untouched


def test_random_crop_keeps_box_half_outside_when_centre_inside():
    image, target = _boxes_sample([[30, 30, 70, 50]])  # centre (50, 40)
    _, out = _FixedWindow([(40, 20, 90, 70)], prob=1.0)(image, target)
    assert out.bbox.tolist() == [[0, 10, 30, 30]] and out.size == (50, 50)


def test_random_crop_retries_then_gives_up():
    image, target = _boxes_sample([[10, 10, 20, 20]])
    empty = (60, 50, 100, 80)  # holds no box centre
    crop = _FixedWindow([empty, empty, (0, 0, 50, 50)], prob=1.0, max_tries=3)
    out_image, out = crop(image, target)
    assert out_image.size == (50, 50) and out.bbox.tolist() == [[10, 10, 20, 20]] and crop.windows == []
    crop = _FixedWindow([empty, empty], prob=1.0, max_tries=2)
    out_image, out = crop(image, target)
    assert out_image is image and out is target  # every try lost every box: not cropped


def test_random_crop_image_without_boxes_is_cropped_and_prob_zero_draws_nothing():
    image, target = _boxes_sample([])
    out_image, out = _FixedWindow([(0, 0, 30, 20)], prob=1.0)(image, target)
    assert out_image.size == (30, 20) == out.size and len(out) == 0
    random.seed(4)
    state = random.getstate()
    out_image, _ = RandomCrop((0.5, 0.5), prob=0.0)(image, target)
    assert out_image is image
    random.setstate(state)
    assert RandomCrop((0.5, 0.5), prob=0.0)(image, target)[0] is image


def test_random_crop_window_within_range_and_seeded():
    crop = RandomCrop((0.5, 0.8), prob=1.0)
    random.seed(1)
    windows = [crop.get_window(100, 80) for _ in range(200)]
    for left, top, right, bottom in windows:
        assert 0 <= left < right <= 100 and 0 <= top < bottom <= 80
        assert 40 <= bottom - top <= 80 and 80 <= right - left <= 100
    random.seed(1)
    assert windows == [crop.get_window(100, 80) for _ in range(200)]
    assert "relative_range=(0.5, 0.8)" in repr(crop)
    with pytest.raises(ValueError, match="relative_range"):
        RandomCrop((0.0, 0.5))
    with pytest.raises(ValueError, match="prob"):
        RandomCrop((0.5, 0.5), prob=1.5)


def test_scale_jitter_multiplies_size_and_cap_and_scales_boxes_exactly():
    image, target = _boxes_sample([[10, 10, 20, 20], [50, 30, 99, 79]], width=100, height=80)
    resize = Resize(40, 60, scale_range=(0.8, 1.25))
    random.seed(7)
    random.choice((40,))  # the short side is chosen first, then the factor
    factor = random.uniform(0.8, 1.25)
    random.seed(7)
    out_image, out = resize(image, target)
    short = int(round(40 * factor))  # long = 50 * factor < cap 60 * factor
    assert out_image.size == (int(short * 100 / 80), short) == out.size
    scale = torch.tensor([out.size[0] / 100, out.size[1] / 80] * 2)
    assert torch.equal(out.bbox, target.bbox * scale)
    # the cap follows the factor: a 4:1 image is capped at 60 * f, not 60
    random.seed(7)
    capped_short = int(round(60 * factor * 100 / 400))
    assert resize.get_size((400, 100)) == (capped_short, capped_short * 4)
    sizes = {Resize(100, None, scale_range=(0.5, 2.0)).get_size((100, 100))[0] for _ in range(200)}
    assert min(sizes) >= 50 and max(sizes) <= 200 and len(sizes) > 50
    assert "scale_range=(0.8, 1.25)" in repr(resize) and "scale_range" not in repr(Resize(40, 60))
    with pytest.raises(ValueError, match="scale_range"):
        Resize(40, 60, scale_range=(1.2, 0.8))


def test_scale_jitter_off_draws_nothing_extra():
    random.seed(3)
    Resize((10, 20, 30), None).get_size((100, 50))
    after_plain = random.random()
    random.seed(3)
    Resize((10, 20, 30), None, scale_range=(1.0, 1.0)).get_size((100, 50))
    assert random.random() == after_plain


def test_build_transforms_augmentations_in_order_and_off_by_default():
    cfg = _cfg("INPUT.CROP_PROB_TRAIN", 0.5, "INPUT.SCALE_JITTER_TRAIN", (0.8, 1.25), "INPUT.PHOTOMETRIC_PROB_TRAIN", 1,
               "INPUT.BLUR_PROB_TRAIN", 0.3, "INPUT.NOISE_PROB_TRAIN", 0.3, "INPUT.JPEG_PROB_TRAIN", 0.3)
    ops = build_transforms(cfg, True).transforms
    assert [type(t).__name__ for t in ops] == [
        "RandomCrop", "Resize", "RandomHorizontalFlip", "PhotoMetricDistortion", "RandomGaussianBlur",
        "RandomGaussianNoise", "RandomJPEGCompression", "ToTensor", "Normalize"]
    assert ops[0].relative_range == (0.9, 0.9) and ops[1].scale_range == (0.8, 1.25)
    assert ops[6].quality_range == (30, 95) and ops[3].prob == 1.0
    default_ops = build_transforms(_cfg(), True).transforms
    assert default_ops[0].scale_range == (1.0, 1.0)
    assert [type(t).__name__ for t in build_transforms(cfg, False).transforms] == ["Resize", "ToTensor", "Normalize"]


@pytest.mark.parametrize("key, value, message", [
    ("CROP_PROB_TRAIN", 1.5, "INPUT.CROP_PROB_TRAIN must be a probability in \\[0, 1\\], got 1.5"),
    ("CROP_SIZE_TRAIN", (0.5, 1.5), "INPUT.CROP_SIZE_TRAIN"),
    ("SCALE_JITTER_TRAIN", (1.25, 0.8), "INPUT.SCALE_JITTER_TRAIN"),
    ("PHOTOMETRIC_PROB_TRAIN", -0.1, "INPUT.PHOTOMETRIC_PROB_TRAIN"),
    ("PHOTOMETRIC_HUE_DELTA", 200.0, "INPUT.PHOTOMETRIC_HUE_DELTA"),
    ("PHOTOMETRIC_CONTRAST_RANGE", (1.5, 0.5), "INPUT.PHOTOMETRIC_CONTRAST_RANGE"),
    ("BLUR_SIGMA_TRAIN", (0.0, 1.0), "INPUT.BLUR_SIGMA_TRAIN"),
    ("NOISE_PROB_TRAIN", 2.0, "INPUT.NOISE_PROB_TRAIN"),
    ("JPEG_QUALITY_TRAIN", (30, 101), "INPUT.JPEG_QUALITY_TRAIN"),
    ("JPEG_QUALITY_TRAIN", (30.5, 90), "integers"),
])
def test_build_transforms_names_the_bad_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_transforms(_cfg("INPUT." + key, value), True)


def test_training_pipeline_same_seed_same_sample():
    from fcos_core.utils.rng import seeded_rng
    cfg = _cfg("INPUT.MIN_SIZE_TRAIN", (40,), "INPUT.MAX_SIZE_TRAIN", 80, "INPUT.CROP_PROB_TRAIN", 1.0,
               "INPUT.CROP_SIZE_TRAIN", (0.5, 0.5), "INPUT.SCALE_JITTER_TRAIN", (0.8, 1.25),
               "INPUT.PHOTOMETRIC_PROB_TRAIN", 1.0, "INPUT.BLUR_PROB_TRAIN", 0.5, "INPUT.NOISE_PROB_TRAIN", 0.5,
               "INPUT.JPEG_PROB_TRAIN", 0.5)
    pipeline = build_transforms(cfg, True)
    image, target = _boxes_sample([[10, 10, 60, 60], [40, 20, 90, 70]])

    def run(seed):
        with seeded_rng(seed):
            return pipeline(image, target)

    outputs = [run(seed) for seed in (11, 11, 12)]
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1].bbox, outputs[1][1].bbox)
    assert not torch.equal(outputs[0][0], outputs[2][0]) or outputs[0][0].shape != outputs[2][0].shape


def test_test_time_augmentation_gets_the_images_unresized():
    """TEST.BBOX_AUG resizes every pass from the original image (engine/bbox_aug.py): the test
    pipeline then has no Resize, and without it the test size applies."""
    from fcos_core.config import load_config
    from fcos_core.data.transforms import build_transforms

    plain = build_transforms(load_config(None, []), is_train=False)
    tta = build_transforms(load_config(None, ["TEST.BBOX_AUG.ENABLED", "True"]), is_train=False)
    assert [type(t).__name__ for t in plain.transforms] == ["Resize", "ToTensor", "Normalize"]
    assert [type(t).__name__ for t in tta.transforms] == ["ToTensor", "Normalize"]
