"""The embedded "shapes" detection dataset: a deterministic generator of COCO-format data.

Six classes, ids and order fixed: 1 circle, 2 ellipse, 3 square, 4 triangle, 5 star, 6 cross.
Each image has a cluttered background (smooth colour fields, gradients, texture noise, soft blobs,
distracting lines and arcs) and 2-10 shapes, filled or outlined, of any colour, rotated, of sizes
from 8 px to about 90% of the image's short side, overlapping each other. Later shapes are drawn
over earlier ones; a shape whose visible pixels are less than ``MIN_VISIBLE`` of its own pixels
(computed with masks) is drawn but not annotated.

Layout written by :func:`generate_shapes_dataset` into ``out_dir``::

    out_dir/images/000000.png ...   RGB images (PNG, lossless, so pixels and bytes are exact)
    out_dir/instances.json          COCO json, keys sorted; "info" records seed and size

Annotations: ``bbox`` is COCO xywh in pixels, the tight box of the whole shape (also the occluded
part) with pixel-inclusive width ``w = x2 - x1 + 1``; ``area`` is ``w * h``; ``iscrowd`` is 0; no
segmentation. The same seed gives the same bytes (one numpy Generator per image, seeded with
(seed, image index)). Generation is atomic: files are written into a hidden temporary folder that is
renamed to ``out_dir`` at the end, so an interrupted run never leaves a complete-looking dataset.
:func:`write_coco_dataset` and :func:`ensure_coco_dataset` do that for any renderer given as a
function of the image index: the second renderer (:mod:`.shapes_variant`) uses them too.

This module uses numpy and OpenCV only (no torch, no other fcos_core module).
"""
import functools
import json
import logging
import os
import shutil
import uuid

import cv2
import numpy as np

CATEGORIES = ("circle", "ellipse", "square", "triangle", "star", "cross")
# bump when the drawing changes, so that catalog folders made by an older generator are redone
GENERATOR_VERSION = 1
# a shape with less than this fraction of its pixels visible (> 70% occluded) gets no annotation
MIN_VISIBLE = 0.3
SHORT_SIDE = (192, 320)  # image short side range, pixels
ASPECT = (0.6, 1.7)  # image width / height range
MIN_OBJECT = 8  # smallest shape (circumscribed diameter), pixels
MAX_OBJECT_FRACTION = 0.9  # largest shape, as a fraction of the short side

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- geometry
def _regular_points(cx, cy, radii, angles):
    """Polygon [K, 2] int32 from polar coordinates around (cx, cy) (angles in radians)."""
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return np.round(pts).astype(np.int32)


def _polygon(rng, kind, cx, cy, r, theta):
    """Vertices [K, 2] of a square/triangle/star/cross inscribed in the circle (cx, cy, r)."""
    if kind == "square":
        angles = theta + np.pi / 4 + np.arange(4) * np.pi / 2
        return _regular_points(cx, cy, np.full(4, r), angles)
    if kind == "triangle":
        # near-equilateral: jitter the vertex angles so triangles are not all alike
        angles = theta + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        return _regular_points(cx, cy, r * rng.uniform(0.85, 1.0, 3), angles)
    if kind == "star":
        inner = rng.uniform(0.38, 0.5)
        radii = np.tile([r, r * inner], 5)
        return _regular_points(cx, cy, radii, theta + np.arange(10) * np.pi / 5)
    # cross ("plus"): 12 vertices; arm half-width t, arm ends on the circle
    t = r * rng.uniform(0.18, 0.3)
    a = np.sqrt(r * r - t * t)
    local = np.array([(t, -a), (t, -t), (a, -t), (a, t), (t, t), (t, a),
                      (-t, a), (-t, t), (-a, t), (-a, -t), (-t, -t), (-t, -a)])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return np.round(local @ rot.T + (cx, cy)).astype(np.int32)


def _draw_shape(canvas, shape, color, line_type=cv2.LINE_8):
    """Draw ``shape`` (dict from :func:`_sample_shape`) on ``canvas`` in place with ``color``;
    ``line_type`` LINE_8: hard edges (this renderer), LINE_AA: anti-aliased (the second renderer)."""
    thickness = -1 if shape["filled"] else shape["thickness"]
    cx, cy, r = shape["cx"], shape["cy"], shape["r"]
    if shape["kind"] == "circle":
        cv2.circle(canvas, (cx, cy), r, color, thickness, line_type)
    elif shape["kind"] == "ellipse":
        axes = (r, max(1, int(round(r * shape["minor"]))))
        cv2.ellipse(canvas, (cx, cy), axes, shape["angle_deg"], 0, 360, color, thickness, line_type)
    elif shape["filled"]:
        cv2.fillPoly(canvas, [shape["points"]], color, line_type)
    else:
        cv2.polylines(canvas, [shape["points"]], True, color, thickness, line_type)


def _object_sizes(rng, short, count):
    """Circumscribed diameters (pixels) of ``count`` shapes in an image of short side ``short``.

    Log-uniform from MIN_OBJECT, so small objects are common, plus in half of the images a large one
    (60-100% of the largest size, skewed towards the top) so that the coarse FPN levels get
    positives too.
    """
    largest = MAX_OBJECT_FRACTION * short
    sizes = np.exp(rng.uniform(np.log(MIN_OBJECT), np.log(0.6 * short), count))
    if rng.random() < 0.5:
        sizes[0] = (1.0 - 0.4 * rng.random() ** 2) * largest
    return np.clip(sizes, MIN_OBJECT, largest)


def _sample_shape(rng, width, height, size):
    """A random shape of circumscribed diameter ``size`` lying inside a width x height image."""
    kind = CATEGORIES[rng.integers(len(CATEGORIES))]
    r = max(MIN_OBJECT // 2, int(size // 2))
    cx = int(rng.integers(r, max(r + 1, width - r)))
    cy = int(rng.integers(r, max(r + 1, height - r)))
    # outlines of tiny shapes would be a few scattered pixels: keep those filled
    filled = bool(size < 16 or rng.random() < 0.6)
    thickness = int(max(1, round(size * rng.uniform(0.03, 0.1))))
    theta = rng.uniform(0, 2 * np.pi)
    shape = dict(kind=kind, cx=cx, cy=cy, r=r, filled=filled, thickness=thickness)
    if kind == "ellipse":
        shape.update(minor=rng.uniform(0.35, 0.65), angle_deg=float(np.degrees(theta)))
    elif kind != "circle":
        shape["points"] = _polygon(rng, kind, cx, cy, r, theta)
    return shape


# ----------------------------------------------------------------------------- background
def _smooth_field(rng, height, width, cells, channels=3):
    """A smooth random field [H, W, channels] float32 in 0-255, from a cells x cells grid."""
    small = rng.uniform(0, 255, (cells, cells, channels)).astype(np.float32)
    field = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return field.reshape(height, width, channels)


def _background(rng, height, width):
    """Cluttered background [H, W, 3] uint8: colour field + gradient + texture + soft blobs."""
    img = _smooth_field(rng, height, width, int(rng.integers(2, 6)))
    # linear gradient in a random direction
    direction = rng.uniform(0, 2 * np.pi)
    xs = np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(direction))
    ys = np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(direction))
    ramp = (xs + ys) / max(height, width)
    img += ramp[..., None] * rng.uniform(-120, 120, 3).astype(np.float32)
    # mid-frequency texture, grey or coloured
    texture = _smooth_field(rng, height, width, int(rng.integers(12, 40)), 1 if rng.random() < 0.5 else 3)
    img += (texture - 127.5) * rng.uniform(0.05, 0.3)
    img = np.clip(img, 0, 255).astype(np.uint8)
    _soft_blobs(rng, img)
    # drop the 2 lowest bits: invisible, but halves the PNG size of these smooth fields
    return img & np.uint8(0xFC)


def _soft_blobs(rng, img):
    """Blend blurred random ellipses into ``img`` in place (round-ish distractors without edges).

    The blobs are drawn and blurred at a quarter of the resolution, which looks the same after
    upscaling and is much faster than a wide blur at full size.
    """
    height, width = img.shape[:2]
    small = cv2.resize(img, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    for _ in range(int(rng.integers(2, 10))):
        center = (int(rng.integers(sw)), int(rng.integers(sh)))
        axes = (int(rng.integers(1, max(2, sw // 3))), int(rng.integers(1, max(2, sh // 3))))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.ellipse(small, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    small = cv2.GaussianBlur(small, (0, 0), float(rng.uniform(0.75, 3)))
    layer = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    alpha = rng.uniform(0.3, 0.8)
    cv2.addWeighted(layer, alpha, img, 1 - alpha, 0, dst=img)


def _distractors(rng, img, count, max_thickness):
    """Draw ``count`` random lines and arcs on ``img`` in place."""
    height, width = img.shape[:2]
    for _ in range(count):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        thickness = int(rng.integers(1, max_thickness + 1))
        if rng.random() < 0.5:
            p1 = (int(rng.integers(width)), int(rng.integers(height)))
            p2 = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(img, p1, p2, color, thickness, cv2.LINE_AA)
        else:
            center = (int(rng.integers(width)), int(rng.integers(height)))
            axes = (int(rng.integers(5, width // 2)), int(rng.integers(5, height // 2)))
            start = float(rng.uniform(0, 360))
            # at most ~3/4 of a turn, so an arc is never a closed circle/ellipse
            span = float(rng.uniform(30, 270))
            cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), start, start + span, color,
                        thickness, cv2.LINE_AA)


def _contrasting_color(rng, img, box):
    """A random RGB colour (tuple of ints) that differs from the mean of ``img`` inside box xywh."""
    x, y, w, h = box
    local = img[y:y + h, x:x + w].reshape(-1, 3).mean(axis=0)
    color = rng.integers(0, 256, 3)
    for _ in range(20):
        if np.abs(color - local).sum() >= 120:
            break
        color = rng.integers(0, 256, 3)
    return tuple(int(c) for c in color)


# ----------------------------------------------------------------------------- one image
def _image_size(rng):
    """(width, height) with short side in SHORT_SIDE and width/height log-uniform in ASPECT."""
    short = int(rng.integers(SHORT_SIDE[0], SHORT_SIDE[1] + 1))
    aspect = float(np.exp(rng.uniform(np.log(ASPECT[0]), np.log(ASPECT[1]))))
    if aspect >= 1:
        return int(round(short * aspect)), short
    return short, int(round(short / aspect))


def _shape_sequence(rng, width, height):
    """Yield the 2-10 shapes (dicts from :func:`_sample_shape`) of a width x height image in draw
    order. Lazily: each is sampled when asked for, after whatever the caller drew from ``rng`` for
    the one before (both renderers' streams depend on that order)."""
    sizes = _object_sizes(rng, min(height, width), int(rng.integers(2, 11)))
    if rng.random() < 0.7:
        # mostly large first, so that small shapes are not all buried under big ones
        sizes = np.sort(sizes)[::-1]
    for size in sizes:
        yield _sample_shape(rng, width, height, size)


def _draw_objects(rng, img):
    """Draw 2-10 shapes on ``img`` in place; returns [(category_id, mask uint8 [H, W])] in draw order."""
    height, width = img.shape[:2]
    drawn = []
    for shape in _shape_sequence(rng, width, height):
        mask = np.zeros((height, width), np.uint8)
        _draw_shape(mask, shape, 1)
        if not mask.any():
            continue
        color = _contrasting_color(rng, img, cv2.boundingRect(mask))
        _draw_shape(img, shape, color)
        drawn.append((CATEGORIES.index(shape["kind"]) + 1, mask))
    return drawn


def _visible(drawn):
    """[(category_id, [x, y, w, h], bool mask [H, W])] of the ``drawn`` shapes ([(category_id,
    uint8 mask [H, W])] in draw order: later shapes cover earlier ones) that are at least
    MIN_VISIBLE visible, in draw order; boxes are the masks' tight COCO xywh boxes in pixels."""
    covered = np.zeros_like(drawn[0][1], dtype=bool) if drawn else None
    kept = []
    for category_id, mask in reversed(drawn):
        pixels = mask.astype(bool)
        visible = np.count_nonzero(pixels & ~covered) / np.count_nonzero(pixels)
        covered |= pixels
        if visible >= MIN_VISIBLE:
            kept.append((category_id, [int(v) for v in cv2.boundingRect(mask)], pixels))
    return kept[::-1]


def _visible_annotations(drawn):
    """[(category_id, [x, y, w, h])] of the drawn shapes that are at least MIN_VISIBLE visible."""
    return [(category_id, box) for category_id, box, _ in _visible(drawn)]


def render_shapes_image(seed, index):
    """Draw image ``index`` of the dataset with ``seed``.

    Returns:
        image (ndarray [H, W, 3] uint8, RGB), annotations (list of (category_id, [x, y, w, h]):
        tight COCO xywh boxes in pixels, w = x2 - x1 + 1).
    """
    rng = np.random.default_rng([seed, index])
    width, height = _image_size(rng)
    img = _background(rng, height, width)
    _distractors(rng, img, int(rng.integers(2, 10)), 3)
    drawn = _draw_objects(rng, img)
    # a few thin distractors over the shapes; too thin to count as occluders
    _distractors(rng, img, int(rng.integers(0, 4)), 1)
    # sensor-like noise on a quarter of the images only: noise is what makes PNGs big
    if rng.random() < 0.25:
        sigma = float(rng.uniform(1.5, 4))
        noise = rng.normal(0, sigma, img.shape).astype(np.float32)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, _visible_annotations(drawn)


# ----------------------------------------------------------------------------- dataset
def _coco_json(images, annotations, info):
    """The COCO dict: ``info`` (dict), ``images`` and ``annotations`` (lists of dicts), the six CATEGORIES."""
    return {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(CATEGORIES)],
    }


def _write_images(img_dir, num_images, render_one, name):
    """Save the files of ``render_one(0..num_images-1)`` in ``img_dir``; returns the COCO image and
    annotation lists (ids from 1). Logs progress every 100 images as "<name>: i / n images written"."""
    images, annotations = [], []
    for index in range(num_images):
        data, file_name, (width, height), anns = render_one(index)
        with open(os.path.join(img_dir, file_name), "wb") as f:
            f.write(data)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for category_id, (x, y, w, h) in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        if (index + 1) % 100 == 0 or index + 1 == num_images:
            logger.info("%s: %d / %d images written", name, index + 1, num_images)
    return images, annotations


def write_coco_dataset(out_dir, num_images, render_one, info, name):
    """Write ``num_images`` rendered images and their COCO json into the new folder ``out_dir``.

    Arguments:
        out_dir (str): folder to create; it must not exist yet.
        num_images (int): number of images (>= 1).
        render_one (callable): ``index -> (data, file_name, (width, height), annotations)``: the
            image file's bytes, its name in ``out_dir/images``, its size in pixels, and a list of
            (category_id, [x, y, w, h]) COCO xywh boxes in pixels.
        info (dict): the json's "info"; ``num_images`` is added to it.
        name (str): what the log calls the dataset ("shapes", "shapes variant").

    Returns:
        (img_dir, ann_file): ``out_dir/images`` and ``out_dir/instances.json`` (keys sorted;
        categories: the six CATEGORIES, ids 1-6, whatever the renderer).

    The files are written into a hidden temporary folder beside ``out_dir`` that is renamed to
    ``out_dir`` when complete (and removed if generation fails). If another process creates
    ``out_dir`` meanwhile, its copy is kept and ours is discarded (same settings, same bytes).
    """
    if num_images < 1:
        raise ValueError("num_images must be >= 1, got {}".format(num_images))
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise FileExistsError("{} exists already".format(out_dir))
    parent, folder = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, ".{}.tmp-{}".format(folder, uuid.uuid4().hex))
    try:
        os.makedirs(os.path.join(tmp, "images"))
        images, annotations = _write_images(os.path.join(tmp, "images"), num_images, render_one, name)
        with open(os.path.join(tmp, "instances.json"), "w") as f:
            json.dump(_coco_json(images, annotations, dict(info, num_images=len(images))), f,
                      sort_keys=True, separators=(",", ":"))
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not os.path.isdir(out_dir):
                raise
            logger.info("%s was created by another process meanwhile; using that one", out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(out_dir, "images"), os.path.join(out_dir, "instances.json")


def _existing_info(ann_file):
    """The "info" dict of an existing shapes json, or None if missing or unreadable."""
    try:
        with open(ann_file) as f:
            return json.load(f).get("info")
    except (OSError, ValueError, AttributeError):
        return None


def ensure_coco_dataset(out_dir, num_images, render_one, info, name):
    """The dataset in ``out_dir``, written first by :func:`write_coco_dataset` (same arguments) if
    missing or if its json's "info" differs from ``info`` plus ``num_images`` in any key of those
    (another renderer, version, seed or count): the stale folder is moved away, with a warning.

    Returns (img_dir, ann_file) as :func:`write_coco_dataset`.
    """
    img_dir, ann_file = os.path.join(out_dir, "images"), os.path.join(out_dir, "instances.json")
    wanted = dict(info, num_images=int(num_images))
    if os.path.isdir(out_dir):
        found = _existing_info(ann_file) or {}
        differing = [k for k, v in wanted.items() if found.get(k) != v]
        if not differing:
            return img_dir, ann_file
        logger.warning("%s dataset %s has %s, wanted %s: generating it again", name, out_dir,
                       {k: found.get(k) for k in differing}, {k: wanted[k] for k in differing})
        parent, folder = os.path.split(os.path.abspath(out_dir))
        stale = os.path.join(parent, ".{}.old-{}".format(folder, uuid.uuid4().hex))
        try:
            os.rename(out_dir, stale)
        except FileNotFoundError:
            pass  # another process moved it away first; it is regenerating it too
        shutil.rmtree(stale, ignore_errors=True)
    logger.info("generating the %s dataset (%d images, seed %d) in %s", name, num_images, info["seed"], out_dir)
    return write_coco_dataset(out_dir, num_images, render_one, info, name)


# ----------------------------------------------------------------------------- the first renderer's files
def _info(seed):
    """The first renderer's json "info" (without num_images)."""
    return {"description": "fcos_core shapes", "generator_version": GENERATOR_VERSION, "seed": int(seed)}


def _png_file(seed, index):
    """``render_one`` of :func:`write_coco_dataset` for the first renderer: image ``index`` as PNG."""
    img, anns = render_shapes_image(seed, index)
    file_name = "{:06d}.png".format(index)
    ok, data = cv2.imencode(".png", img[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("could not encode {}".format(file_name))
    return data.tobytes(), file_name, (img.shape[1], img.shape[0]), anns


def generate_shapes_dataset(out_dir, num_images, seed):
    """Write a shapes dataset of ``num_images`` images into the new folder ``out_dir``.

    Arguments:
        out_dir (str): folder to create; it must not exist yet.
        num_images (int): number of images (>= 1).
        seed (int): the same seed gives the same bytes.

    Returns:
        (img_dir, ann_file): ``out_dir/images`` and ``out_dir/instances.json``.

    Atomic, as :func:`write_coco_dataset`: an interrupted run leaves nothing; another process's
    copy written meanwhile is kept.
    """
    return write_coco_dataset(out_dir, num_images, functools.partial(_png_file, seed), _info(seed), "shapes")


def ensure_shapes_dataset(out_dir, num_images, seed):
    """The shapes dataset in ``out_dir``, generated first if missing or made with other settings.

    Returns (img_dir, ann_file) as :func:`generate_shapes_dataset`. A folder whose json records
    another seed, image count, generator version or renderer is replaced (atomically, with a warning).
    """
    return ensure_coco_dataset(out_dir, num_images, functools.partial(_png_file, seed), _info(seed), "shapes")
