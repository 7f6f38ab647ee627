"""A second renderer of the shapes dataset, to measure generalisation (never training data).

The shapes, their classes, sizes, positions and the annotation rules are those of
:mod:`fcos_core.data.datasets.shapes` (its geometry functions are reused: same six categories with
the same ids, same image sizes, same "at least MIN_VISIBLE visible" rule), but everything about how
they look is different, so that a detector that learnt the first renderer's pixels rather than the
shapes scores lower here:

* anti-aliased edges (OpenCV LINE_AA) and shaded fills (a linear light ramp across each shape)
  instead of hard-edged flat colours;
* another background: multi-octave ("1/f", photograph-like) noise textures mapped through a random
  palette, with clutter that is not a class: text and long thin bars;
* camera-like degradations over the whole image: a lighting gradient with vignetting and a colour
  cast, Gaussian blur (70% of images), signal-dependent sensor noise (85%), and JPEG at a random
  quality 25-85 (every image: the files are JPEGs).

Boxes: COCO xywh in pixels, the tight box of the shape's pixels that are at least half covered by
its anti-aliased drawing (the analogue of the first renderer's hard-edged pixels), before blur;
``area`` = w * h, ``iscrowd`` 0. Layout (as the first renderer's, with JPEG images)::

    out_dir/images/000000.jpg ...
    out_dir/instances.json          COCO json, keys sorted; "info" records renderer, version, seed, size

The same seed gives the same bytes on a machine (one numpy Generator per image; OpenCV's JPEG
encoder). Written atomically by :func:`.shapes.write_coco_dataset` (a hidden temporary folder renamed
at the end). numpy and OpenCV only.
"""
import functools

import cv2
import numpy as np

from .shapes import (CATEGORIES, _contrasting_color, _draw_shape, _image_size, _shape_sequence, _visible,
                     ensure_coco_dataset, write_coco_dataset)

# bump when the drawing changes, so that catalog folders made by an older version are redone
VARIANT_VERSION = 1
RENDERER = "variant"
JPEG_QUALITY = (25, 85)
# text clutter avoids the characters that look like a class (O/0/Q: circle, X/+/*: cross, A/V: triangle)
TEXT_CHARACTERS = "BCEFGHJKLMNPRSTUWYZ2345679abdeghkmnprstuyz"
TEXT_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
              cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)


# ----------------------------------------------------------------------------- background
def _fractal_noise(rng, height, width):
    """A photograph-like texture [H, W] float32 in 0-1: octaves of smooth noise, amplitude ~ 1/f^beta."""
    beta = rng.uniform(0.6, 1.3)
    total = np.zeros((height, width), np.float32)
    for cells in (3, 6, 12, 24, 48, 96):
        small = rng.standard_normal((cells, cells)).astype(np.float32)
        total += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) * np.float32(cells ** -beta)
    low, high = np.percentile(total, (1, 99))
    return np.clip((total - low) / max(high - low, 1e-6), 0, 1)


def _palette_background(rng, height, width):
    """Background [H, W, 3] float32 0-255: a fractal texture mapped through a random 3-colour palette."""
    t = _fractal_noise(rng, height, width)[..., None]
    dark, mid, light = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
    lower = dark + (mid - dark) * np.clip(2 * t, 0, 1)
    return lower + (light - mid) * np.clip(2 * t - 1, 0, 1)


def _text_clutter(rng, img, count):
    """Draw ``count`` random words (anti-aliased Hershey fonts) on uint8 ``img`` in place."""
    height, width = img.shape[:2]
    for _ in range(count):
        text = "".join(rng.choice(list(TEXT_CHARACTERS), int(rng.integers(2, 7))))
        font = TEXT_FONTS[int(rng.integers(len(TEXT_FONTS)))]
        origin = (int(rng.integers(-20, width)), int(rng.integers(10, height + 10)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.putText(img, text, origin, font, float(rng.uniform(0.4, 1.8)), color, int(rng.integers(1, 4)),
                    cv2.LINE_AA)


def _bar_clutter(rng, img, count):
    """Draw ``count`` rotated bars (length/width >= 3, never square-like) on ``img`` in place."""
    height, width = img.shape[:2]
    for _ in range(count):
        thickness = float(rng.uniform(2, 12))
        rect = ((float(rng.uniform(0, width)), float(rng.uniform(0, height))),
                (thickness * float(rng.uniform(3, 12)), thickness), float(rng.uniform(0, 180)))
        points = np.round(cv2.boxPoints(rect)).astype(np.int32)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.7:
            cv2.fillPoly(img, [points], color, cv2.LINE_AA)
        else:
            cv2.polylines(img, [points], True, color, 1, cv2.LINE_AA)


# ----------------------------------------------------------------------------- shapes
def _coverage(shape, height, width):
    """The anti-aliased drawing of ``shape`` (dict from shapes._sample_shape): uint8 [H, W], 255 = covered."""
    canvas = np.zeros((height, width), np.uint8)
    _draw_shape(canvas, shape, 255, cv2.LINE_AA)
    return canvas


def _shaded_fill(rng, color, shape, roi):
    """Colour field [h, w, 3] float32 over ``roi`` = (x, y, w, h): ``color`` lit by a linear ramp
    across the shape (gain 1 +- up to 0.4 from one side of the shape to the other)."""
    x, y, w, h = roi
    direction = rng.uniform(0, 2 * np.pi)
    xs = (np.arange(x, x + w, dtype=np.float32) - shape["cx"]) * np.float32(np.cos(direction))
    ys = (np.arange(y, y + h, dtype=np.float32) - shape["cy"]) * np.float32(np.sin(direction))
    ramp = (xs[None, :] + ys[:, None]) / np.float32(max(shape["r"], 1))
    gain = 1 + np.float32(rng.uniform(0.1, 0.4)) * np.clip(ramp, -1, 1)
    return np.clip(np.asarray(color, np.float32) * gain[..., None], 0, 255)


def _draw_objects(rng, img):
    """Draw 2-10 shapes on float32 ``img`` [H, W, 3] in place.

    Returns [(category_id, half-covered mask uint8 [H, W])] in draw order (shapes with no
    half-covered pixel are drawn but left out).
    """
    height, width = img.shape[:2]
    drawn = []
    for shape in _shape_sequence(rng, width, height):
        coverage = _coverage(shape, height, width)
        mask = (coverage >= 128).astype(np.uint8)
        if not mask.any():
            continue
        color = _contrasting_color(rng, img, cv2.boundingRect(mask))
        x, y, w, h = roi = cv2.boundingRect(coverage)  # blend only where the drawing has any coverage
        alpha = coverage[y:y + h, x:x + w, None].astype(np.float32) / 255
        patch = img[y:y + h, x:x + w]
        patch += alpha * (_shaded_fill(rng, color, shape, roi) - patch)
        drawn.append((CATEGORIES.index(shape["kind"]) + 1, mask))
    return drawn


# ----------------------------------------------------------------------------- camera
def _lighting(rng, img):
    """``img`` (float32 [H, W, 3]) under a light gradient, vignetting and a colour cast."""
    height, width = img.shape[:2]
    xs = np.arange(width, dtype=np.float32)[None, :] - width / 2
    ys = np.arange(height, dtype=np.float32)[:, None] - height / 2
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (xs * np.float32(np.cos(direction)) + ys * np.float32(np.sin(direction))) / max(height, width)
    radius2 = (xs ** 2 + ys ** 2) / np.float32((width / 2) ** 2 + (height / 2) ** 2)
    gain = (1 + np.float32(rng.uniform(-0.6, 0.6)) * ramp) * (1 - np.float32(rng.uniform(0, 0.5)) * radius2)
    cast = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    return img * (gain[..., None] * cast)


def _sensor(rng, img):
    """Blur (70% of images) and signal-dependent noise (85%): float32 in, uint8 out."""
    if rng.random() < 0.7:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.4)))
    if rng.random() < 0.85:
        read, shot = rng.uniform(1, 6), rng.uniform(0, 0.15)
        std = np.sqrt(read ** 2 + shot * np.clip(img, 0, 255)).astype(np.float32)
        img = img + std * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_variant_image(seed, index):
    """Draw image ``index`` of the second renderer with ``seed``.

    Returns a dict: ``jpeg`` (bytes of the JPEG file), ``width``, ``height`` (pixels),
    ``annotations`` (list of (category_id, [x, y, w, h]): tight COCO xywh boxes, w = x2 - x1 + 1)
    and ``masks`` (bool [H, W] per annotation: the shape's half-covered pixels, before blur).
    """
    rng = np.random.default_rng([seed, index, 0x5EC0])  # salted: never the first renderer's stream
    width, height = _image_size(rng)
    img = _palette_background(rng, height, width)
    clutter = np.clip(img, 0, 255).astype(np.uint8)
    _text_clutter(rng, clutter, int(rng.integers(1, 6)))
    _bar_clutter(rng, clutter, int(rng.integers(1, 6)))
    img = clutter.astype(np.float32)
    drawn = _draw_objects(rng, img)
    img = _sensor(rng, _lighting(rng, img))
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    ok, data = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("could not encode variant image {} (seed {})".format(index, seed))
    visible = _visible(drawn)
    return dict(jpeg=data.tobytes(), width=width, height=height,
                annotations=[(category_id, box) for category_id, box, _ in visible],
                masks=[mask for _, _, mask in visible])


# ----------------------------------------------------------------------------- dataset
def _info(seed):
    """The second renderer's json "info" (without num_images)."""
    return {"description": "fcos_core shapes, second renderer (evaluation only)", "renderer": RENDERER,
            "generator_version": VARIANT_VERSION, "seed": int(seed)}


def _jpeg_file(seed, index):
    """``render_one`` of shapes.write_coco_dataset for the second renderer: image ``index`` as JPEG."""
    rendered = render_variant_image(seed, index)
    return (rendered["jpeg"], "{:06d}.jpg".format(index), (rendered["width"], rendered["height"]),
            rendered["annotations"])


def generate_variant_dataset(out_dir, num_images, seed):
    """Write ``num_images`` images of the second renderer into the new folder ``out_dir``.

    Returns (img_dir, ann_file) = (``out_dir/images``, ``out_dir/instances.json``). Raises
    FileExistsError if ``out_dir`` exists, ValueError if ``num_images`` < 1. Files go to a hidden
    temporary folder beside ``out_dir``, renamed to it when complete (removed on failure); if another
    process created ``out_dir`` meanwhile, its copy is kept (same seed, same bytes).
    """
    return write_coco_dataset(out_dir, num_images, functools.partial(_jpeg_file, seed), _info(seed),
                              "shapes variant")


def ensure_variant_dataset(out_dir, num_images, seed):
    """The second renderer's dataset in ``out_dir``, generated first if missing or made with another
    renderer, version, seed or image count (the stale folder is moved away, with a warning).

    Returns (img_dir, ann_file) as :func:`generate_variant_dataset`.
    """
    return ensure_coco_dataset(out_dir, num_images, functools.partial(_jpeg_file, seed), _info(seed),
                               "shapes variant")
