"""COCO-like JPEGs for the loader benchmark (:mod:`fcos_core.benchmark.loader`), made on demand and seeded.

Each image is 640 x 480 (COCO's most common size), saved as a baseline JPEG of quality 90 (about
what COCO's files are), with content that compresses like a photograph: a smooth colour field,
2-12 filled ellipses and rectangles (their boxes are the annotations, COCO has 7.3 boxes per image on
average) and Gaussian grain. The records (file name, size, boxes in xyxy pixels, labels 1..80) are
written beside the images as ``records.json``; a folder made with the same arguments is reused.
"""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

RECORDS = "records.json"


def _image_and_boxes(rng, width, height):
    """One synthetic photograph-like RGB PIL image and its boxes (list of [x1, y1, x2, y2], pixels)."""
    grid = rng.randint(0, 256, (rng.randint(3, 8), rng.randint(4, 10), 3)).astype(np.uint8)
    image = Image.fromarray(grid).resize((width, height), Image.BICUBIC)
    draw, boxes = ImageDraw.Draw(image), []
    for _ in range(rng.randint(2, 13)):
        w, h = rng.randint(16, width // 2), rng.randint(16, height // 2)
        x1, y1 = rng.randint(0, width - w), rng.randint(0, height - h)
        box = [int(x1), int(y1), int(x1 + w - 1), int(y1 + h - 1)]
        shape = draw.ellipse if rng.rand() < 0.5 else draw.rectangle
        shape(box, fill=tuple(int(v) for v in rng.randint(0, 256, 3)))
        boxes.append(box)
    grain = rng.normal(0.0, 8.0, (height, width, 3))
    pixels = np.clip(np.asarray(image, np.float64) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), boxes


def make_loader_jpegs(folder, count, width=640, height=480, quality=90, seed=0):
    """Write (or reuse) ``count`` JPEGs and their ``records.json`` under ``folder``.

    Returns:
        list of dict: one record per image, ``{"file_name": absolute path, "width", "height",
        "boxes": [[x1, y1, x2, y2], ...] (pixels), "labels": [int in 1..80, ...]}``.
    """
    params = dict(count=count, width=width, height=height, quality=quality, seed=seed)
    path = os.path.join(folder, RECORDS)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("params") == params and all(os.path.exists(os.path.join(folder, r["file_name"]))
                                                 for r in saved["records"]):
            return _absolute(folder, saved["records"])
    os.makedirs(folder, exist_ok=True)
    rng, records = np.random.RandomState(seed), []
    for i in range(count):
        image, boxes = _image_and_boxes(rng, width, height)
        name = "{:06d}.jpg".format(i)
        image.save(os.path.join(folder, name), "JPEG", quality=quality)
        labels = [int(v) for v in rng.randint(1, 81, len(boxes))]
        records.append(dict(file_name=name, width=width, height=height, boxes=boxes, labels=labels))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(params=params, records=records), f)
    os.replace(tmp, path)  # records.json appears only once every image is written
    return _absolute(folder, records)


def _absolute(folder, records):
    """``records`` with ``file_name`` joined to ``folder``."""
    return [dict(r, file_name=os.path.join(os.path.abspath(folder), r["file_name"])) for r in records]
