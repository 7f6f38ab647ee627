"""Transforms of an (image, target) pair: cropping, resizing, flipping, colour jitter, tensor conversion.

Each transform takes ``(image, target)`` and returns both, the boxes of ``target`` (a BoxList in
pixels) kept consistent with the image. Resize, TensorResize and Normalize also accept ``target=None``
and then return the image only (for inference on bare images). Random choices use Python's ``random``
(RandomCrop, Resize, RandomHorizontalFlip) and torch's generator (ColorJitter); in training the
datasets seed both per sample from the sampler (:mod:`fcos_core.utils.rng`), so the augmentation of
a sample does not depend on the DataLoader worker, the number of processes or a restart. A
transform that is switched off draws nothing, so switching a new one on or off leaves the draws of
the others as they were. The photometric degradations (distortion, blur, noise, JPEG) are in
:mod:`fcos_core.data.transforms.photometric`.
"""
import random

import torch
import torchvision
from torchvision.transforms import functional as F

from fcos_core.structures.bounding_box import FLIP_LEFT_RIGHT

RESIZE_BACKENDS = ("pil", "tensor")


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
        scale_range ((low, high) floats > 0): scale jitter. Per call a factor drawn uniformly in
            [low, high] multiplies both the chosen ``min_size`` and ``max_size`` (so a wide image
            is zoomed as much as a square one); (1, 1), the default, draws nothing.
        backend ("pil" or "tensor"): how a PIL image is resized (INPUT.RESIZE_BACKEND). "pil":
            PIL's bilinear resize, a PIL image out (the original). "tensor": the image as a uint8
            Tensor[C, H, W] interpolated bilinearly with antialiasing (as PIL filters), a uint8
            tensor out, within 2 grey levels of PIL's and about 2x faster. A tensor in is resized by
            ``F.resize`` either way.

    Boxes are scaled by new/old size per axis (exactly, via BoxList.resize).
    """

    def __init__(self, min_size, max_size, scale_range=(1.0, 1.0), backend="pil"):
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        if backend not in RESIZE_BACKENDS:
            raise ValueError("backend must be one of {}, got {!r}".format(RESIZE_BACKENDS, backend))
        self.min_size = tuple(min_size)
        self.max_size = max_size
        self.backend = backend
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError("scale_range must be (low, high) with 0 < low <= high, got {}".format(scale_range))
        self.scale_range = (low, high)

    def get_size(self, image_size):
        """(height, width) of the output for an input ``image_size`` = (width, height).

        The original's rule: the long side would be ``size * long / short``; if that exceeds
        ``max_size`` the short side becomes ``round(max_size * short / long)``. The long side is then
        ``int(size * long / short)`` (truncated). With scale jitter, ``size`` is
        ``round(choice(min_size) * f)`` and the cap ``max_size * f``, f ~ U(scale_range).
        """
        w, h = image_size
        size, max_size = random.choice(self.min_size), self.max_size
        if self.scale_range != (1.0, 1.0):
            factor = random.uniform(*self.scale_range)
            size = max(1, int(round(size * factor)))
            max_size = None if max_size is None else max_size * factor
        if max_size is not None:
            short, long = float(min(w, h)), float(max(w, h))
            if long / short * size > max_size:
                size = int(round(max_size * short / long))
        if (w <= h and w == size) or (h <= w and h == size):
            return h, w
        if w < h:
            return int(size * h / w), size
        return size, int(size * w / h)

    def __call__(self, image, target=None):
        size = self.get_size(_image_size(image))
        if self.backend == "tensor" and not isinstance(image, torch.Tensor):
            image = resize_uint8(F.pil_to_tensor(image), size)
        else:
            image = F.resize(image, list(size))
        if target is None:
            return image
        return image, target.resize(_image_size(image))

    def __repr__(self):
        sizes = self.min_size
        if len(sizes) > 4:
            sizes = "{}..{}".format(min(sizes), max(sizes))
        jitter = "" if self.scale_range == (1.0, 1.0) else ", scale_range={}".format(self.scale_range)
        backend = "" if self.backend == "pil" else ", backend={!r}".format(self.backend)
        return "{}(min_size={}, max_size={}{}{})".format(self.__class__.__name__, sizes, self.max_size, jitter, backend)


def resize_uint8(image, size):
    """uint8 Tensor[C, H, W] -> uint8 Tensor[C, size[0], size[1]]: bilinear with antialiasing
    (``align_corners=False``), which filters as PIL's bilinear resize does (torch's uint8 kernel)."""
    return torch.nn.functional.interpolate(image[None], size=tuple(size), mode="bilinear", antialias=True,
                                           align_corners=False)[0]


class TensorResize(object):
    """Resize a normalised image tensor as torchvision's detection models do (``GeneralizedRCNNTransform``).

    The scale is ``min(min_size / short side, max_size / long side)`` (floats, not rounded), and the
    [C, H, W] tensor is interpolated bilinearly (``align_corners=False``, no antialiasing) by
    ``F.interpolate(scale_factor=scale, recompute_scale_factor=True)``: output sides
    ``floor(side * scale)``. torchvision resizes after normalising, so this op comes after
    :class:`Normalize` (INPUT.RESIZE_STYLE "torchvision").

    Arguments:
        min_size (int or sequence of int): short side in pixels; with several, one is drawn per
            call (training).
        max_size (int or None): cap on the long side in pixels.
        scale_range ((low, high) floats > 0): scale jitter, a factor drawn uniformly per call that
            multiplies the scale; (1, 1), the default, draws nothing.

    Boxes (BoxList) are scaled by new/old size per axis (BoxList.resize).
    """

    def __init__(self, min_size, max_size, scale_range=(1.0, 1.0)):
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError("scale_range must be (low, high) with 0 < low <= high, got {}".format(scale_range))
        self.scale_range = (low, high)

    def get_scale(self, height, width):
        """The scale factor (float) for an input of ``height`` x ``width`` pixels."""
        size = random.choice(self.min_size)
        scale = size / min(height, width)
        if self.max_size is not None:
            scale = min(scale, self.max_size / max(height, width))
        if self.scale_range != (1.0, 1.0):
            scale *= random.uniform(*self.scale_range)
        return scale

    def __call__(self, image, target=None):
        height, width = image.shape[-2:]
        image = torch.nn.functional.interpolate(image[None], scale_factor=self.get_scale(height, width),
                                                mode="bilinear", recompute_scale_factor=True,
                                                align_corners=False)[0]
        if target is None:
            return image
        return image, target.resize(_image_size(image))

    def __repr__(self):
        jitter = "" if self.scale_range == (1.0, 1.0) else ", scale_range={}".format(self.scale_range)
        return "{}(min_size={}, max_size={}{})".format(self.__class__.__name__, self.min_size, self.max_size, jitter)


class RandomCrop(object):
    """With probability ``prob``, crop a random window and keep the boxes whose centre lies in it.

    Arguments:
        relative_range ((min_h, min_w) floats in (0, 1]): the window is ``round(H * U(min_h, 1))``
            by ``round(W * U(min_w, 1))`` pixels (detectron2's RandomCrop "relative_range"), at a
            uniformly drawn position inside the image.
        prob (float in [0, 1]): probability of cropping an image at all.
        max_tries (int >= 1): windows drawn until one keeps at least one box centre; if none does
            the image and boxes are returned unchanged (an image without boxes is always cropped).

    Boxes (BoxList, xyxy pixel-inclusive) whose centre ``((x1 + x2) / 2, (y1 + y2) / 2)`` lies in
    the window's pixels ``[left, right - 1] x [top, bottom - 1]`` are kept, shifted by
    ``(-left, -top)`` and clipped to the window (``[0, w - 1] x [0, h - 1]``); the others are
    dropped with their fields.
    """

    def __init__(self, relative_range, prob=1.0, max_tries=10):
        self.relative_range = tuple(float(v) for v in relative_range)
        if len(self.relative_range) != 2 or not all(0 < v <= 1 for v in self.relative_range):
            raise ValueError("relative_range must be 2 floats in (0, 1], got {}".format(relative_range))
        if not 0 <= prob <= 1:
            raise ValueError("prob must be in [0, 1], got {}".format(prob))
        if max_tries < 1:
            raise ValueError("max_tries must be >= 1, got {}".format(max_tries))
        self.prob, self.max_tries = prob, int(max_tries)

    def get_window(self, width, height):
        """A random window (left, top, right, bottom) in pixels, right/bottom exclusive."""
        crop_h = max(1, int(round(height * random.uniform(self.relative_range[0], 1.0))))
        crop_w = max(1, int(round(width * random.uniform(self.relative_range[1], 1.0))))
        top, left = random.randint(0, height - crop_h), random.randint(0, width - crop_w)
        return left, top, left + crop_w, top + crop_h

    def __call__(self, image, target):
        if random.random() >= self.prob:
            return image, target
        width, height = _image_size(image)
        boxes = target.convert("xyxy").bbox
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        for _ in range(self.max_tries):
            left, top, right, bottom = window = self.get_window(width, height)
            keep = (cx >= left) & (cx <= right - 1) & (cy >= top) & (cy <= bottom - 1)
            if len(boxes) == 0 or bool(keep.any()):
                return crop_image(image, window), crop_boxes(target, window, keep)
        return image, target

    def __repr__(self):
        return "{}(relative_range={}, prob={}, max_tries={})".format(self.__class__.__name__, self.relative_range,
                                                                    self.prob, self.max_tries)


def crop_image(image, window):
    """``image`` (PIL image or [..., H, W] tensor) cut to ``window`` = (left, top, right, bottom)."""
    left, top, right, bottom = window
    if isinstance(image, torch.Tensor):
        return image[..., top:bottom, left:right]
    return image.crop(window)


def crop_boxes(target, window, keep):
    """The boxes of BoxList ``target`` selected by bool Tensor[N] ``keep``, for the crop ``window``.

    Returns a new BoxList of size (right - left, bottom - top), in ``target``'s mode: coordinates
    shifted by (-left, -top) and clamped to [0, w - 1] x [0, h - 1] (pixel-inclusive); fields
    selected alike.
    """
    return target[keep].crop(window).clip_to_image(remove_empty=False)


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
    """PIL image (RGB) -> float tensor [3, H, W], RGB in 0-1 (``F.to_tensor``'s values, bit for bit);
    a uint8 Tensor[C, H, W] (Resize with backend "tensor") -> the same, float32 / 255."""

    def __call__(self, image, target):
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            return image.to(torch.float32).div_(255), target
        if getattr(image, "mode", None) in ("RGB", "L"):
            # F.to_tensor's uint8 -> float32 / 255 in one new tensor, without its HWC float
            # temporaries: 3x faster on an 800 x 1066 image (docs/benchmark.md, loader)
            return F.pil_to_tensor(image).to(torch.float32).div_(255), target
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
            # a new tensor (the input is never changed), then scaled and normalised in place:
            # the values of ``F.normalize(image[[2, 1, 0]] * 255)`` without two more copies
            image = F.normalize(image[[2, 1, 0]].mul_(255), mean=self.mean, std=self.std, inplace=True)
        else:
            image = F.normalize(image, mean=self.mean, std=self.std)
        if target is None:
            return image
        return image, target

    def __repr__(self):
        return "{}(mean={}, std={}, to_bgr255={})".format(self.__class__.__name__, self.mean, self.std,
                                                          self.to_bgr255)
