"""Transforms of an (image, target) pair: resizing, flipping, colour jitter, tensor conversion.

Each transform takes ``(image, target)`` and returns both, the boxes of ``target`` (a BoxList in
pixels) kept consistent with the image. Resize and Normalize also accept ``target=None`` and then
return the image only (for inference on bare images). Random choices use Python's ``random``
(Resize, RandomHorizontalFlip) and torch's generator (ColorJitter); in training the datasets seed
both per sample from the sampler (:mod:`fcos_core.utils.rng`), so the augmentation of a sample
does not depend on the DataLoader worker, the number of processes or a restart.
"""
import random

import torchvision
from torchvision.transforms import functional as F

from fcos_core.structures.bounding_box import FLIP_LEFT_RIGHT


class Compose(object):
    """Apply ``transforms`` (a list of (image, target) transforms) in order."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self):
        lines = ["    {}".format(t) for t in self.transforms]
        return "{}(\n{}\n)".format(self.__class__.__name__, "\n".join(lines))


def _image_size(image):
    """(width, height) of a PIL image or a [..., H, W] tensor."""
    _, height, width = F.get_dimensions(image)
    return width, height


class Resize(object):
    """Resize so that the short side is ``min_size``, unless the long side would exceed ``max_size``.

    Arguments:
        min_size (int or sequence of int): target short side in pixels; with several values one is
            drawn at random per call (multi-scale training).
        max_size (int or None): cap on the long side in pixels; the short side shrinks to respect it.

    Boxes are scaled by new/old size per axis (exactly, via BoxList.resize).
    """

    def __init__(self, min_size, max_size):
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        self.min_size = tuple(min_size)
        self.max_size = max_size

    def get_size(self, image_size):
        """(height, width) of the output for an input ``image_size`` = (width, height).

        The original's rule: the long side would be ``size * long / short``; if that exceeds
        ``max_size`` the short side becomes ``round(max_size * short / long)``. The long side is then
        ``int(size * long / short)`` (truncated).
        """
        w, h = image_size
        size = random.choice(self.min_size)
        if self.max_size is not None:
            short, long = float(min(w, h)), float(max(w, h))
            if long / short * size > self.max_size:
                size = int(round(self.max_size * short / long))
        if (w <= h and w == size) or (h <= w and h == size):
            return h, w
        if w < h:
            return int(size * h / w), size
        return size, int(size * w / h)

    def __call__(self, image, target=None):
        size = self.get_size(_image_size(image))
        image = F.resize(image, list(size))
        if target is None:
            return image
        return image, target.resize(_image_size(image))

    def __repr__(self):
        sizes = self.min_size
        if len(sizes) > 4:
            sizes = "{}..{}".format(min(sizes), max(sizes))
        return "{}(min_size={}, max_size={})".format(self.__class__.__name__, sizes, self.max_size)


class RandomHorizontalFlip(object):
    """Mirror image and boxes left-right with probability ``prob`` (x' = W - 1 - x, pixel-inclusive)."""

    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, image, target):
        if random.random() < self.prob:
            image = F.hflip(image)
            target = target.transpose(FLIP_LEFT_RIGHT)
        return image, target

    def __repr__(self):
        return "{}(prob={})".format(self.__class__.__name__, self.prob)


class ColorJitter(object):
    """torchvision ColorJitter on the image (a PIL image, before ToTensor); boxes unchanged."""

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
        self.color_jitter = torchvision.transforms.ColorJitter(
            brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def __call__(self, image, target):
        return self.color_jitter(image), target

    def __repr__(self):
        return repr(self.color_jitter)


class ToTensor(object):
    """PIL image (RGB) -> float tensor [3, H, W], RGB in 0-1."""

    def __call__(self, image, target):
        return F.to_tensor(image), target

    def __repr__(self):
        return self.__class__.__name__ + "()"


class Normalize(object):
    """(image - mean) / std per channel, on an RGB 0-1 tensor [3, H, W] from ToTensor.

    Arguments:
        mean, std (sequence of 3 floats): in the units and channel order of the output.
        to_bgr255 (bool): first convert to BGR in 0-255 (Caffe2-style weights, the FCOS default,
            with mean = PIXEL_MEAN in BGR 0-255 and std 1); otherwise stay RGB in 0-1.
    """

    def __init__(self, mean, std, to_bgr255=True):
        self.mean = list(mean)
        self.std = list(std)
        self.to_bgr255 = to_bgr255

    def __call__(self, image, target=None):
        if self.to_bgr255:
            image = image[[2, 1, 0]] * 255
        image = F.normalize(image, mean=self.mean, std=self.std)
        if target is None:
            return image
        return image, target

    def __repr__(self):
        return "{}(mean={}, std={}, to_bgr255={})".format(self.__class__.__name__, self.mean, self.std,
                                                          self.to_bgr255)
