"""Photometric training augmentations: colour distortion, blur, sensor noise, JPEG re-compression.

Each transform takes ``(image, target)`` with ``image`` a PIL RGB image (8 bits per channel, before
ToTensor) and returns a new image of the same size with ``target`` unchanged (the same object):
only pixels change, never geometry. Scalar random choices use Python's ``random`` and the noise
field torch's CPU generator, the two generators the datasets seed per sample
(:mod:`fcos_core.utils.rng`), so an augmented sample is the same on every run and after a restart.

The pixel maths are pure functions on uint8 RGB arrays [H, W, 3] (``adjust_*``,
:func:`add_gaussian_noise`; :func:`jpeg_roundtrip` on PIL images), each result rounded and clipped
to 0-255 (values outside that range are not colours, and the HSV of a negative value is
meaningless). Per-value steps use look-up tables, so a distortion costs a few milliseconds per
image on one core.
"""
import io
import random

import cv2
import numpy as np
import torch
from PIL import Image


def _check_prob(prob, name="prob"):
    """``prob`` as a float, or ValueError if it is outside [0, 1]."""
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError("{} must be a probability in [0, 1], got {}".format(name, prob))
    return float(prob)


def _check_range(value, name, low, high):
    """``value`` as a (a, b) tuple of floats with low <= a <= b <= high, or ValueError naming ``name``."""
    value = tuple(float(v) for v in value)
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ValueError("{} must be (a, b) with {} <= a <= b <= {}, got {}".format(name, low, high, value))
    return value


def _rgb(image):
    """PIL image -> the same as an RGB PIL image (TypeError for anything else, e.g. a tensor)."""
    if not isinstance(image, Image.Image):
        raise TypeError("photometric transforms take a PIL image (before ToTensor), got {}".format(type(image)))
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_array(image):
    """PIL image -> uint8 array [H, W, 3], RGB (TypeError for anything else)."""
    return np.asarray(_rgb(image))


def _lut(values):
    """A 256-entry uint8 look-up table from float ``values`` [256]: rounded, clipped to 0-255."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- pixel maths
def adjust_brightness(array, delta):
    """``array + delta`` (uint8 [H, W, 3] in and out), rounded and clipped to 0-255."""
    return cv2.LUT(array, _lut(np.arange(256) + delta))


def adjust_contrast(array, alpha):
    """``array * alpha``, rounded and clipped to 0-255 (mmdetection's contrast: a gain about 0, not
    about the mean); uint8 [H, W, 3] in and out."""
    return cv2.LUT(array, _lut(np.arange(256) * alpha))


def adjust_saturation_hue(array, alpha=1.0, hue_delta=0.0):
    """Multiply the HSV saturation by ``alpha`` (clipped to full saturation) and add ``hue_delta``
    degrees to the hue (modulo 360); uint8 [H, W, 3] RGB in and out.

    Done in OpenCV's 8-bit HSV (hue in 2-degree steps, saturation in 0-255) with look-up tables:
    a few times faster than in float, and the round trip moves a pixel by a few levels at most.
    """
    hue, saturation, value = cv2.split(cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2HSV))
    saturation = cv2.LUT(saturation, _lut(np.arange(256) * alpha))
    hue = cv2.LUT(hue, np.mod(np.rint(np.arange(256) + hue_delta / 2.0), 180).astype(np.uint8))
    return cv2.cvtColor(cv2.merge([hue, saturation, value]), cv2.COLOR_HSV2RGB)


def add_gaussian_noise(array, std, generator=None):
    """``array`` (uint8 [H, W, 3]) plus i.i.d. N(0, std^2) per pixel and channel (0-255 units),
    rounded and clipped to 0-255; uint8 out. The noise comes from torch's ``generator`` (default:
    torch's global CPU generator)."""
    pixels = torch.from_numpy(array.astype(np.float32))  # a copy: the input stays as it is
    pixels.add_(torch.randn(pixels.shape, generator=generator), alpha=float(std))
    return pixels.round_().clamp_(0, 255).to(torch.uint8).numpy()


def jpeg_roundtrip(image, quality):
    """PIL RGB ``image`` encoded as JPEG at ``quality`` (1-100, libjpeg via Pillow) and decoded."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


# ----------------------------------------------------------------------------- transforms
class PhotoMetricDistortion(object):
    """Colour distortion in the manner of mmdetection's ``PhotoMetricDistortion``.

    With probability ``prob`` per image, these steps in order, each with probability 0.5:
    brightness (add U(-brightness_delta, brightness_delta)); contrast (multiply by
    U(contrast_range)), done here or after the hue step, each at random with probability 0.5;
    saturation (multiply the HSV saturation by U(saturation_range)); hue (add
    U(-hue_delta, hue_delta) degrees). Unlike mmdetection's, the result is clipped to 0-255 after
    each step and there is no random channel swap. Defaults are mmdetection's (32, (0.5, 1.5),
    (0.5, 1.5), 18). Boxes unchanged.
    """

    def __init__(self, brightness_delta=32.0, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta=18.0, prob=1.0):
        if not 0 <= brightness_delta <= 255:
            raise ValueError("brightness_delta must be in [0, 255], got {}".format(brightness_delta))
        if not 0 <= hue_delta <= 180:
            raise ValueError("hue_delta must be in [0, 180] degrees, got {}".format(hue_delta))
        self.brightness_delta, self.hue_delta = float(brightness_delta), float(hue_delta)
        self.contrast_range = _check_range(contrast_range, "contrast_range", 0, float("inf"))
        self.saturation_range = _check_range(saturation_range, "saturation_range", 0, float("inf"))
        self.prob = _check_prob(prob)

    def __call__(self, image, target):
        if random.random() >= self.prob:
            return image, target
        array = _to_array(image)
        if random.random() < 0.5:
            array = adjust_brightness(array, random.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = random.random() < 0.5
        if contrast_first:
            array = self._contrast(array)
        saturation = random.uniform(*self.saturation_range) if random.random() < 0.5 else 1.0
        hue = random.uniform(-self.hue_delta, self.hue_delta) if random.random() < 0.5 else 0.0
        if saturation != 1.0 or hue != 0.0:
            array = adjust_saturation_hue(array, saturation, hue)
        if not contrast_first:
            array = self._contrast(array)
        return Image.fromarray(array, "RGB"), target

    def _contrast(self, array):
        """``array`` with the contrast step applied with probability 0.5."""
        if random.random() < 0.5:
            return adjust_contrast(array, random.uniform(*self.contrast_range))
        return array

    def __repr__(self):
        return "{}(brightness_delta={}, contrast_range={}, saturation_range={}, hue_delta={}, prob={})".format(
            self.__class__.__name__, self.brightness_delta, self.contrast_range, self.saturation_range,
            self.hue_delta, self.prob)


class RandomGaussianBlur(object):
    """With probability ``prob``, blur with a Gaussian of sigma ~ U(sigma_range) pixels (OpenCV,
    kernel size chosen by OpenCV from sigma, borders reflected). Boxes unchanged."""

    def __init__(self, sigma_range=(0.1, 2.0), prob=0.5):
        self.sigma_range = _check_range(sigma_range, "sigma_range", 1e-6, 100)
        self.prob = _check_prob(prob)

    def __call__(self, image, target):
        if random.random() >= self.prob:
            return image, target
        sigma = random.uniform(*self.sigma_range)
        array = _to_array(image)
        return Image.fromarray(cv2.GaussianBlur(array, (0, 0), sigmaX=sigma, sigmaY=sigma), "RGB"), target

    def __repr__(self):
        return "{}(sigma_range={}, prob={})".format(self.__class__.__name__, self.sigma_range, self.prob)


class RandomGaussianNoise(object):
    """With probability ``prob``, add sensor-like noise: N(0, std^2) per pixel and channel, std ~
    U(std_range) in 0-255 units, from torch's global CPU generator (seeded per sample in
    training). Boxes unchanged."""

    def __init__(self, std_range=(3.2, 7.1), prob=0.5):
        self.std_range = _check_range(std_range, "std_range", 0, 255)
        self.prob = _check_prob(prob)

    def __call__(self, image, target):
        if random.random() >= self.prob:
            return image, target
        std = random.uniform(*self.std_range)
        return Image.fromarray(add_gaussian_noise(_to_array(image), std), "RGB"), target

    def __repr__(self):
        return "{}(std_range={}, prob={})".format(self.__class__.__name__, self.std_range, self.prob)


class RandomJPEGCompression(object):
    """With probability ``prob``, re-compress as JPEG at an integer quality ~ U{quality_range}
    (inclusive, 1-100) and decode again (blocking and ringing artefacts). Boxes unchanged."""

    def __init__(self, quality_range=(30, 95), prob=0.5):
        low, high = _check_range(quality_range, "quality_range", 1, 100)
        if low != int(low) or high != int(high):
            raise ValueError("quality_range must be 2 integers in [1, 100], got {}".format(quality_range))
        self.quality_range = (int(low), int(high))
        self.prob = _check_prob(prob)

    def __call__(self, image, target):
        if random.random() >= self.prob:
            return image, target
        return jpeg_roundtrip(_rgb(image), random.randint(*self.quality_range)), target

    def __repr__(self):
        return "{}(quality_range={}, prob={})".format(self.__class__.__name__, self.quality_range, self.prob)
