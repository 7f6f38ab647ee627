"""A synthetic COCO-2017-sized instances json, for measuring the data pipeline at full size.

:func:`make_coco_like` writes, under one folder (atomically: built in ``<folder>.partial`` and
renamed), ``annotations.json`` and ``images/``:

- ``annotations.json``: by default 118,287 images (COCO train2017's count) with COCO-like sparse ids
  and sizes (640x480, 480x640, 640x427, ...), about 7.3 annotations per image (~863k; about 0.9% of
  images without any), each with a polygon "segmentation" (8-48 vertices on an ellipse in the box),
  "area", "bbox" (xywh, pixels) and "iscrowd" (about 1% crowd, with an uncompressed RLE
  segmentation), and COCO's 80 categories with their ids (1..90 with gaps) and names. About 455 MB.
- ``images/``: one file per image ``file_name`` ("%012d.jpg" of the id), each a hard link (a
  symbolic link where hard links fail) to one of a few small real JPEGs under ``jpegs/``, one per
  image size, so any image reader gets a decodable image of the json's size.

``broken=n`` adds n annotations of each kind a real json may hold by mistake: a "bbox" of 3 numbers,
an "image_id" that no image has, a "category_id" (12, a gap of COCO's ids) that is not listed.
The output is a function of the arguments only (seeded numpy ``Generator``).
"""
import json
import logging
import os
import shutil

import numpy as np
from PIL import Image

from fcos_core.engine.coco_classes import COCO_CATEGORIES

logger = logging.getLogger(__name__)

COCO_TRAIN2017_IMAGES = 118287
# COCO's 80 category ids (1..90 with gaps), in the order of COCO_CATEGORIES[1:]
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
UNLISTED_CATEGORY_ID = 12
# (width, height) of the images and how often each occurs
IMAGE_SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 426), (500, 375), (640, 360), (612, 612)]
SIZE_WEIGHTS = [0.40, 0.15, 0.18, 0.07, 0.08, 0.04, 0.05, 0.03]
MEAN_ANNOTATIONS = 7.3  # COCO train2017: 860,001 annotations over 118,287 images
NO_ANNOTATION_FRACTION = 0.0086  # COCO train2017: 1,021 images without annotations
CROWD_FRACTION = 0.01
VERTICES = (8, 48)  # polygon vertices, uniform in [8, 48]
IMAGES_PER_CHUNK = 4096


def coco_categories():
    """COCO's 80 categories: [{"id", "name", "supercategory"}] with COCO's ids and names."""
    return [{"id": i, "name": name, "supercategory": "object"}
            for i, name in zip(COCO_CATEGORY_IDS, COCO_CATEGORIES[1:])]


def _image_table(rng, num_images):
    """(ids int64 [N] (distinct, COCO-like sparse, unsorted), size index int64 [N], annotation count int64 [N])."""
    ids = rng.choice(max(581929, 2 * num_images), size=num_images, replace=False) + 1
    sizes = rng.choice(len(IMAGE_SIZES), size=num_images, p=SIZE_WEIGHTS)
    counts = 1 + rng.poisson((MEAN_ANNOTATIONS - 1) / (1 - NO_ANNOTATION_FRACTION), size=num_images)
    counts[rng.random(num_images) < NO_ANNOTATION_FRACTION] = 0
    return ids.astype(np.int64), sizes.astype(np.int64), counts.astype(np.int64)


def _broken_kinds(rng, total, broken):
    """{annotation index: kind} for ``broken`` annotations of each kind ("short_box", "no_image", "no_category")."""
    if broken <= 0:
        return {}
    if 3 * broken > total:
        raise ValueError("broken={} needs at least {} annotations, the json has {}".format(broken, 3 * broken, total))
    where = rng.choice(total, size=3 * broken, replace=False)
    kinds = ["short_box", "no_image", "no_category"] * broken
    return dict(zip(where.tolist(), kinds))


def _boxes(rng, wh):
    """Boxes xywh float64 [N, 4] (pixels, 2 decimals) inside images of size ``wh`` [N, 2] (w, h)."""
    n = len(wh)
    side = np.exp(rng.uniform(np.log(4.0), np.log(wh.min(axis=1) * 0.95), size=(2, n))).T  # log-uniform sizes
    side *= rng.uniform(0.6, 1.0, size=(n, 2))
    xy = rng.random((n, 2)) * (wh - side)
    return np.round(np.concatenate([xy, side], axis=1), 2)


def _polygon(rng, box, k):
    """A closed polygon of ``k`` vertices on the ellipse in ``box`` (xywh): [x1, y1, x2, y2, ...] (2 decimals)."""
    t = np.sort(rng.uniform(0, 2 * np.pi, size=k))
    r = rng.uniform(0.8, 1.0, size=k)
    x = box[0] + box[2] * (0.5 + 0.5 * r * np.cos(t))
    y = box[1] + box[3] * (0.5 + 0.5 * r * np.sin(t))
    return np.round(np.stack([x, y], axis=1).ravel(), 2).tolist()


def _crowd_rle(rng, wh):
    """An uncompressed RLE segmentation {"counts": [...], "size": [h, w]} covering the whole image."""
    w, h = int(wh[0]), int(wh[1])
    runs = rng.integers(1, 2 * w, size=int(rng.integers(10, 60))).tolist()
    runs.append(max(w * h - sum(runs), 0))
    return {"counts": runs, "size": [h, w]}


def _annotations(rng, first_id, image_ids, wh, counts, broken, first_index):
    """The annotation dicts of one chunk of images (ids from ``first_id``; ``broken``: {global index: kind})."""
    owner = np.repeat(np.arange(len(image_ids)), counts)
    boxes = _boxes(rng, wh[owner])
    cats = rng.choice(len(COCO_CATEGORY_IDS), size=len(owner), p=_category_weights())
    crowd = rng.random(len(owner)) < CROWD_FRACTION
    vertices = rng.integers(VERTICES[0], VERTICES[1] + 1, size=len(owner))
    out = []
    for k in range(len(owner)):
        box = boxes[k].tolist()
        ann = {"id": first_id + k, "image_id": int(image_ids[owner[k]]),
               "category_id": COCO_CATEGORY_IDS[cats[k]], "iscrowd": int(crowd[k]),
               "area": round(box[2] * box[3] * 0.785, 2), "bbox": box,
               "segmentation": _crowd_rle(rng, wh[owner[k]]) if crowd[k] else [_polygon(rng, box, vertices[k])]}
        kind = broken.get(first_index + k)
        if kind == "short_box":
            ann["bbox"] = box[:3]
        elif kind == "no_image":
            ann["image_id"] = 10 ** 9 + first_index + k
        elif kind == "no_category":
            ann["category_id"] = UNLISTED_CATEGORY_ID
        out.append(ann)
    return out


def _category_weights():
    """Frequencies of the 80 categories: "person" about 30% as in COCO, the others alike."""
    weights = np.ones(len(COCO_CATEGORY_IDS))
    weights[0] = 0.3 / 0.7 * (len(weights) - 1)
    return weights / weights.sum()


def _write_jpegs(folder, seed):
    """One small real JPEG per IMAGE_SIZES entry under ``folder``: {(w, h): path}."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = {}
    for w, h in IMAGE_SIZES:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=2)
        pixels = np.clip(base + rng.integers(-20, 21, size=(h, w, 3)), 0, 255).astype(np.uint8)
        paths[(w, h)] = os.path.join(folder, "{}x{}.jpg".format(w, h))
        Image.fromarray(pixels).save(paths[(w, h)], quality=80)
    return paths


def _link(src, dst):
    """Hard link ``dst`` to ``src``; a relative symbolic link where hard links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(os.path.relpath(src, os.path.dirname(dst)), dst)


class _JsonWriter:
    """Writes {"info", "licenses", "categories", "images": [...], "annotations": [...]} piece by piece."""

    def __init__(self, f):
        self.f, self.first = f, True

    def open_list(self, key):
        self.f.write(',"{}":['.format(key))
        self.first = True

    def items(self, items):
        for item in items:
            self.f.write(("" if self.first else ",") + json.dumps(item, separators=(",", ":")))
            self.first = False

    def close_list(self):
        self.f.write("]")


def make_coco_like(out_dir, num_images=COCO_TRAIN2017_IMAGES, seed=0, broken=0, overwrite=False):
    """Write a synthetic COCO-like instances json and its images under ``out_dir`` (see the module docstring).

    Arguments:
        out_dir (str): the folder to create (``annotations.json``, ``images/``, ``jpegs/``).
        num_images (int): images in the json (default COCO train2017's 118,287).
        seed (int): the output is a function of (num_images, seed, broken).
        broken (int): broken annotations of each of the three kinds to add.
        overwrite (bool): replace an existing ``out_dir`` (else FileExistsError).

    Returns:
        dict: "ann_file", "root" (the images folder), "images", "annotations" (counts written).
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError("{} exists; remove it or pass overwrite=True (--overwrite)".format(out_dir))
    partial = out_dir + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(os.path.join(partial, "images"))
    rng = np.random.default_rng(seed)
    ids, sizes, counts = _image_table(rng, num_images)
    broken_at = _broken_kinds(rng, int(counts.sum()), broken)
    jpegs = _write_jpegs(os.path.join(partial, "jpegs"), seed)
    wh = np.asarray(IMAGE_SIZES, np.int64)[sizes]
    with open(os.path.join(partial, "annotations.json"), "w") as f:
        _write_json(f, rng, ids, wh, counts, broken_at, seed)
    for image_id, (w, h) in zip(ids.tolist(), wh.tolist()):
        _link(jpegs[(w, h)], os.path.join(partial, "images", "{:012d}.jpg".format(image_id)))
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.rename(partial, out_dir)
    logger.info("wrote %s: %d images, %d annotations", out_dir, num_images, int(counts.sum()))
    return {"ann_file": os.path.join(out_dir, "annotations.json"), "root": os.path.join(out_dir, "images"),
            "images": num_images, "annotations": int(counts.sum())}


def _write_json(f, rng, ids, wh, counts, broken_at, seed):
    """The json of :func:`make_coco_like` into the text file ``f``, logging progress every ~10%."""
    f.write(json.dumps({"info": {"description": "synthetic COCO-like instances (fcos_core synthetic_coco)",
                                 "seed": seed}, "licenses": []})[:-1])
    out = _JsonWriter(f)
    out.open_list("categories")
    out.items(coco_categories())
    out.close_list()
    out.open_list("images")
    out.items({"id": i, "file_name": "{:012d}.jpg".format(i), "width": w, "height": h, "license": 1}
              for i, (w, h) in zip(ids.tolist(), wh.tolist()))
    out.close_list()
    out.open_list("annotations")
    first, step = 0, max(len(ids) // 10, 1)
    for start in range(0, len(ids), IMAGES_PER_CHUNK):
        end = min(start + IMAGES_PER_CHUNK, len(ids))
        out.items(_annotations(rng, first + 1, ids[start:end], wh[start:end], counts[start:end], broken_at, first))
        first += int(counts[start:end].sum())
        if end // step > start // step or end == len(ids):
            logger.info("annotations of %d / %d images written", end, len(ids))
    out.close_list()
    f.write("}")
