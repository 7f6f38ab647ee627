"""The training / testing transform pipelines from the config (INPUT.*)."""
import torch

from fcos_core.structures.bounding_box import BoxList

from . import photometric as P
from . import transforms as T

RESIZE_STYLES = ("original", "torchvision")


def train_min_sizes(min_size_train, min_size_range_train):
    """Short-side choices for training: MIN_SIZE_TRAIN, or every integer of MIN_SIZE_RANGE_TRAIN."""
    low, high = min_size_range_train
    if (low, high) == (-1, -1):
        return min_size_train
    if not 0 < low <= high:
        raise ValueError("INPUT.MIN_SIZE_RANGE_TRAIN must be (-1, -1) or (low, high) with 0 < low <= high, "
                         "got {}".format(tuple(min_size_range_train)))
    # drawn uniformly among the integers low..high, as the original does
    return tuple(range(low, high + 1))


def _probability(cfg, key):
    """``cfg.INPUT[key]`` as a float, or ValueError naming the key if it is outside [0, 1]."""
    value = cfg.INPUT[key]
    if not 0.0 <= value <= 1.0:
        raise ValueError("INPUT.{} must be a probability in [0, 1], got {}".format(key, value))
    return float(value)


def _range(cfg, key, low, high, integers=False):
    """``cfg.INPUT[key]`` as a (a, b) tuple with low <= a <= b <= high (integers if asked), or
    ValueError naming the key."""
    value = tuple(cfg.INPUT[key])
    ok = len(value) == 2 and low <= value[0] <= value[1] <= high
    if ok and integers:
        ok = all(float(v).is_integer() for v in value)
    if not ok:
        kind = "integers" if integers else "numbers"
        raise ValueError("INPUT.{} must be (a, b), {} with {} <= a <= b <= {}, got {}".format(
            key, kind, low, high, value))
    return tuple(int(v) for v in value) if integers else tuple(float(v) for v in value)


def _scalar(cfg, key, low, high):
    """``cfg.INPUT[key]`` as a float in [low, high], or ValueError naming the key."""
    value = cfg.INPUT[key]
    if not low <= value <= high:
        raise ValueError("INPUT.{} must be in [{}, {}], got {}".format(key, low, high, value))
    return float(value)


def make_resize(resize_style, min_size, max_size, scale_range=(1.0, 1.0), backend="pil"):
    """The resize op of ``resize_style`` (INPUT.RESIZE_STYLE): "original" -> :class:`Resize` of the
    PIL image (integer sizes rounded as the original; it goes before ToTensor) by ``backend``
    (INPUT.RESIZE_BACKEND, "pil" or "tensor"), "torchvision" -> :class:`TensorResize` of the
    normalised tensor (it goes after Normalize; ``backend`` plays no part)."""
    if resize_style not in RESIZE_STYLES:
        raise ValueError("INPUT.RESIZE_STYLE must be one of {}, got {!r}".format(RESIZE_STYLES, resize_style))
    if backend not in T.RESIZE_BACKENDS:
        raise ValueError("INPUT.RESIZE_BACKEND must be one of {}, got {!r}".format(T.RESIZE_BACKENDS, backend))
    if resize_style == "original":
        return T.Resize(min_size, max_size, scale_range=scale_range, backend=backend)
    return T.TensorResize(min_size, max_size, scale_range=scale_range)


def inference_transforms(min_size, max_size, pixel_mean, pixel_std, to_bgr255, resize_style="original",
                         resize_backend="pil"):
    """The test pipeline: a :class:`Compose` of ``(image, target)`` on a PIL RGB image (a bare image:
    :func:`transform_image`).

    "original": Resize, ToTensor, Normalize; "torchvision": ToTensor, Normalize, TensorResize (as
    torchvision's detection models: normalise, then interpolate). ``min_size`` None: no resize
    (test-time augmentation resizes its passes itself). ``pixel_mean``/``pixel_std``/``to_bgr255``
    as :class:`Normalize`; sizes in pixels; ``resize_backend`` as :func:`make_resize`.
    """
    ops = [T.ToTensor(), T.Normalize(mean=pixel_mean, std=pixel_std, to_bgr255=to_bgr255)]
    if min_size is not None:
        resize = make_resize(resize_style, min_size, max_size, backend=resize_backend)
        ops = [resize] + ops if resize_style == "original" else ops + [resize]
    return T.Compose(ops)


def transform_image(transforms, image):
    """``image`` (PIL, RGB) alone through an ``(image, target)`` pipeline such as
    :func:`inference_transforms`: an empty BoxList of the image's size stands in for the target.
    Returns what the pipeline makes of the image (a float tensor [3, H', W'] for the test pipeline)."""
    out, _ = transforms(image, BoxList(torch.zeros(0, 4), image.size, mode="xyxy"))
    return out


def _crop_ops(cfg):
    """RandomCrop, if INPUT.CROP_PROB_TRAIN > 0."""
    crop_prob, crop_size = _probability(cfg, "CROP_PROB_TRAIN"), _range(cfg, "CROP_SIZE_TRAIN", 1e-6, 1.0)
    return [T.RandomCrop(crop_size, crop_prob)] if crop_prob > 0 else []


def _train_resize(cfg):
    """The training resize of INPUT.RESIZE_STYLE (MIN_SIZE_TRAIN or MIN_SIZE_RANGE_TRAIN,
    MAX_SIZE_TRAIN, SCALE_JITTER_TRAIN)."""
    min_size = train_min_sizes(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_RANGE_TRAIN)
    jitter = _range(cfg, "SCALE_JITTER_TRAIN", 1e-6, float("inf"))
    return make_resize(cfg.INPUT.RESIZE_STYLE, min_size, cfg.INPUT.MAX_SIZE_TRAIN, scale_range=jitter,
                       backend=cfg.INPUT.RESIZE_BACKEND)


def _photometric_ops(cfg):
    """PhotoMetricDistortion, blur, noise and JPEG re-compression, each where its probability > 0
    (ValueError if any is on with RESIZE_BACKEND "tensor", as they need a PIL image)."""
    distortion = P.PhotoMetricDistortion(
        brightness_delta=_scalar(cfg, "PHOTOMETRIC_BRIGHTNESS_DELTA", 0, 255),
        contrast_range=_range(cfg, "PHOTOMETRIC_CONTRAST_RANGE", 0, float("inf")),
        saturation_range=_range(cfg, "PHOTOMETRIC_SATURATION_RANGE", 0, float("inf")),
        hue_delta=_scalar(cfg, "PHOTOMETRIC_HUE_DELTA", 0, 180),
        prob=_probability(cfg, "PHOTOMETRIC_PROB_TRAIN"))
    candidates = [
        distortion,
        P.RandomGaussianBlur(_range(cfg, "BLUR_SIGMA_TRAIN", 1e-6, 100), _probability(cfg, "BLUR_PROB_TRAIN")),
        P.RandomGaussianNoise(_range(cfg, "NOISE_STD_TRAIN", 0, 255), _probability(cfg, "NOISE_PROB_TRAIN")),
        P.RandomJPEGCompression(_range(cfg, "JPEG_QUALITY_TRAIN", 1, 100, integers=True),
                                _probability(cfg, "JPEG_PROB_TRAIN")),
    ]
    ops = [op for op in candidates if op.prob > 0]
    if ops and cfg.INPUT.RESIZE_STYLE == "original" and cfg.INPUT.RESIZE_BACKEND == "tensor":
        raise ValueError("INPUT.RESIZE_BACKEND 'tensor' hands a tensor to {}, which needs a PIL image: use "
                         "RESIZE_BACKEND 'pil' or set their INPUT.*_PROB_TRAIN to 0".format(
                             ", ".join(type(op).__name__ for op in ops)))
    return ops


def build_transforms(cfg, is_train=True):
    """Compose of the input pipeline.

    Training: [ColorJitter if any of INPUT.BRIGHTNESS/CONTRAST/SATURATION/HUE > 0], [RandomCrop
    (CROP_PROB_TRAIN, CROP_SIZE_TRAIN)], Resize (MIN_SIZE_TRAIN or MIN_SIZE_RANGE_TRAIN,
    MAX_SIZE_TRAIN, SCALE_JITTER_TRAIN), RandomHorizontalFlip (HORIZONTAL_FLIP_PROB_TRAIN, if > 0),
    [PhotoMetricDistortion (PHOTOMETRIC_*)], [RandomGaussianBlur (BLUR_*)], [RandomGaussianNoise
    (NOISE_*)], [RandomJPEGCompression (JPEG_*)], ToTensor, Normalize; a bracketed step only where
    its probability is > 0. The degradations follow the resize so that their pixel units (blur
    sigma, JPEG blocks) are those of the training scale. Testing: Resize (MIN_SIZE_TEST,
    MAX_SIZE_TEST; not with TEST.BBOX_AUG.ENABLED, whose passes resize themselves), ToTensor, Normalize. Normalize gives BGR 0-255 minus PIXEL_MEAN divided by
    PIXEL_STD with TO_BGR255 (default), else RGB 0-1.

    With INPUT.RESIZE_STYLE "torchvision" the resize is a :class:`TensorResize` at the end, after
    Normalize, as torchvision's models resize (so flips and degradations see the unresized image).
    With "original" and INPUT.RESIZE_BACKEND "tensor" the Resize hands a uint8 tensor on (flip and
    ToTensor take it; the PIL-based degradations do not, so they must be off).

    Raises ValueError naming the INPUT key whose value is out of range.
    """
    style = cfg.INPUT.RESIZE_STYLE
    if style not in RESIZE_STYLES:
        raise ValueError("INPUT.RESIZE_STYLE must be one of {}, got {!r}".format(RESIZE_STYLES, style))
    normalize = (cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255)
    if not is_train:
        # test-time augmentation resizes every pass from the original image itself
        # (engine/bbox_aug.py), as the original's loader hands it the images unresized
        min_size = None if cfg.TEST.BBOX_AUG.ENABLED else cfg.INPUT.MIN_SIZE_TEST
        return inference_transforms(min_size, cfg.INPUT.MAX_SIZE_TEST, *normalize, resize_style=style,
                                    resize_backend=cfg.INPUT.RESIZE_BACKEND)
    ops = []
    jitter = (cfg.INPUT.BRIGHTNESS, cfg.INPUT.CONTRAST, cfg.INPUT.SATURATION, cfg.INPUT.HUE)
    if any(v > 0 for v in jitter):
        ops.append(T.ColorJitter(*jitter))
    ops.extend(_crop_ops(cfg))
    resize = _train_resize(cfg)
    if style == "original":
        ops.append(resize)
    if cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN > 0:
        ops.append(T.RandomHorizontalFlip(cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN))
    ops.extend(_photometric_ops(cfg))
    ops.append(T.ToTensor())
    ops.append(T.Normalize(mean=normalize[0], std=normalize[1], to_bgr255=normalize[2]))
    if style == "torchvision":
        ops.append(resize)
    return T.Compose(ops)
