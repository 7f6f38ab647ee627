"""COCO-format detection dataset, and the bad-data bookkeeping shared by the datasets of this package.

Bad data never stops a run and is never silent: each annotation, image or file that a dataset cannot
use is named in a ``logging`` warning (once; at most ``SkipLog.MAX_MESSAGES`` per reason, then a
count) and counted. :func:`data_skip_counts` returns the counts so a trainer can log them.
"""
import contextlib
import io
import json
import logging
import math
import os
from collections import Counter

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from pycocotools.coco import COCO

from fcos_core.structures.bounding_box import BoxList
from fcos_core.utils.rng import seeded_getitem

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- bad-data bookkeeping
class SkipLog:
    """Counts what a dataset skips, by reason, and warns about each item (up to a limit).

    Arguments:
        owner (str): names the dataset in the messages (e.g. its annotation file).
    """

    MAX_MESSAGES = 20  # per reason; past that only the final summary counts them

    def __init__(self, owner):
        self.owner = owner
        self.counts = Counter()

    def skip(self, reason, message, *args):
        """Count one item under ``reason`` and warn with ``message % args`` (prefixed by the owner)."""
        self.counts[reason] += 1
        if self.counts[reason] <= self.MAX_MESSAGES:
            logger.warning("%s: " + message, self.owner, *args)
        if self.counts[reason] == self.MAX_MESSAGES:
            logger.warning("%s: further '%s' messages are not shown, only counted", self.owner, reason)

    def summarize(self):
        """One warning with all the counts, if anything was skipped."""
        if self.counts:
            logger.warning("%s: skipped %s", self.owner, dict(sorted(self.counts.items())))


class ImageFailures:
    """Per-image failure flags shared by the DataLoader worker processes and the main process.

    The flags live in a shared-memory tensor, so an image that failed in one worker is skipped (and
    not reported again) by the others, and the main process can count the failures.

    Arguments:
        num_images (int): number of images of the dataset.
    """

    UNREADABLE = 1
    SIZE_MISMATCH = 2

    def __init__(self, num_images):
        self.flags = torch.zeros(num_images, dtype=torch.uint8).share_memory_()

    def is_unreadable(self, index):
        return int(self.flags[index]) == self.UNREADABLE

    def mark(self, index, flag):
        """Set ``flag`` on image ``index``; True if it was not set before (report it then)."""
        if int(self.flags[index]) == flag:
            return False
        self.flags[index] = flag
        return True

    def counts(self):
        """Counter {"unreadable_image": n, "image_size_mismatch": m} of the flags set so far."""
        out = Counter()
        out["unreadable_image"] = int((self.flags == self.UNREADABLE).sum())
        out["image_size_mismatch"] = int((self.flags == self.SIZE_MISMATCH).sum())
        return +out  # drop zero counts


def load_rgb_image(path):
    """The image at ``path`` as a decoded RGB PIL image, or the exception that prevented it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() decodes the whole file, so truncation shows here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return e


def next_readable_sample(dataset, index, read):
    """``read(i)`` for the first ``i`` from ``index`` on (wrapping) whose image can be read.

    ``read(i)`` returns a sample or None when image ``i`` is unreadable (it reports that itself).
    A long run then goes on with another image instead of stopping.

    Raises:
        RuntimeError: no image of the dataset can be read.
    """
    for offset in range(len(dataset)):
        i = (index + offset) % len(dataset)
        if dataset.failures.is_unreadable(i):
            continue
        sample = read(i)
        if sample is not None:
            return sample
    raise RuntimeError("{}: none of its {} images can be read".format(type(dataset).__name__, len(dataset)))


def data_skip_counts(dataset):
    """Counter of what ``dataset`` skipped so far, by reason (empty for datasets that do not count).

    Reasons: annotations (``bad_box``, ``empty_box``, ``too_small``, ``outside_image``,
    ``unknown_category``, ``unknown_image``), boxes clipped to the image (``clipped``), images
    (``image_without_size``, ``unreadable_image``, ``image_size_mismatch``, ``bad_annotation_file``).
    Works through :class:`ConcatDataset` (sums).
    """
    skipped = getattr(dataset, "skipped", None)
    return Counter(skipped) if skipped is not None else Counter()


# ----------------------------------------------------------------------------- COCO json
def _load_coco(ann_file):
    """pycocotools COCO object for ``ann_file``, with a clear error for a missing or broken file."""
    if not os.path.isfile(ann_file):
        raise FileNotFoundError("COCO annotation file {} not found".format(os.path.abspath(ann_file)))
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError("COCO annotation file {} is not valid JSON: {}".format(ann_file, e)) from None
    if not isinstance(data, dict) or not data.get("images"):
        raise ValueError("COCO annotation file {} lists no images".format(ann_file))
    coco = COCO()
    coco.dataset = data
    # pycocotools prints progress lines; keep the training log clean
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _bbox_values(bbox):
    """(x, y, w, h) floats from a COCO "bbox", or None if it is not 4 finite numbers."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return None
    return values if all(math.isfinite(v) for v in values) else None


def clip_box(box, width, height, skips, what):
    """A pixel-inclusive xyxy ``box`` clipped to a width x height image, or None if unusable.

    Reports through ``skips`` (a SkipLog): boxes outside the image or at most one pixel wide/high are
    skipped; boxes clipped by more than a pixel are kept but reported ("clipped"). ``what`` names
    the box in messages.
    """
    x1, y1, x2, y2 = box
    cx1, cx2 = min(max(x1, 0.0), width - 1.0), min(max(x2, 0.0), width - 1.0)
    cy1, cy2 = min(max(y1, 0.0), height - 1.0), min(max(y2, 0.0), height - 1.0)
    if cx2 <= cx1 or cy2 <= cy1:
        if x2 > x1 and y2 > y1:
            skips.skip("outside_image", "%s: box %s lies outside the %dx%d image; dropped", what,
                       [round(v, 2) for v in box], width, height)
        else:
            # same rule as BoxList.clip_to_image(remove_empty=True): a box needs x2 > x1, y2 > y1
            skips.skip("too_small", "%s: box %s is at most 1 pixel wide or high; dropped", what,
                       [round(v, 2) for v in box])
        return None
    if max(abs(cx1 - x1), abs(cy1 - y1), abs(cx2 - x2), abs(cy2 - y2)) > 1.0:
        skips.skip("clipped", "%s: box %s exceeds the %dx%d image; clipped to it", what,
                   [round(v, 2) for v in box], width, height)
    return [cx1, cy1, cx2, cy2]


class COCODataset(torch.utils.data.Dataset):
    """Images and boxes of a COCO-format json file (pycocotools).

    Arguments:
        ann_file (str): COCO json ("images", "annotations", "categories").
        root (str): folder that the images' ``file_name`` are relative to.
        remove_images_without_annotations (bool): drop images with no usable box (True for
            training, False for testing so that every image is evaluated).
        transforms (callable or None): ``(image, target) -> (image, target)``.

    ``dataset[i]`` is ``(image, target, i)``: image = PIL RGB image (or what the transforms make of
    it: a [3, H, W] tensor, BGR 0-255 minus the pixel mean with the default config), target =
    BoxList xyxy (pixel-inclusive, from COCO xywh with x2 = x + w - 1) in pixels of the image, with
    field "labels" (int64 [N], contiguous 1..C). Crowd boxes (iscrowd=1) are left out.
    A :class:`~fcos_core.utils.rng.SeededIndex` ``i`` (the training sampler's) runs the random
    transforms with generators seeded from ``i.seed``.

    Attributes: ``coco`` (pycocotools COCO), ``ids`` (json image ids, sorted), ``id_to_img_map``
    (index -> json image id), ``json_category_id_to_contiguous_id`` and
    ``contiguous_category_id_to_json_id`` (sorted json category ids <-> 1..C), ``categories``
    (json id -> name), ``skipped`` (Counter, see :func:`data_skip_counts`).
    """

    def __init__(self, ann_file, root, remove_images_without_annotations, transforms=None):
        self.ann_file, self.root, self.transforms = ann_file, root, transforms
        self._skips = SkipLog("COCODataset({})".format(ann_file))
        self.coco = _load_coco(ann_file)
        cat_ids = sorted(self.coco.getCatIds())
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.contiguous_category_id_to_json_id = {v: k for k, v in self.json_category_id_to_contiguous_id.items()}
        self.categories = {c: self.coco.cats[c].get("name", str(c)) for c in cat_ids}
        ids = sorted(i for i in self.coco.imgs if self._has_size(i))
        self._targets = self._parse_annotations(set(ids))
        if remove_images_without_annotations:
            kept = [i for i in ids if len(self._targets[i][1]) > 0]
            if len(kept) < len(ids):
                logger.info("%s: %d of %d images have no usable box and are left out of training",
                            self._skips.owner, len(ids) - len(kept), len(ids))
            ids = kept
        if not ids:
            raise ValueError("{}: no usable image{}".format(
                self._skips.owner, " with annotations" if remove_images_without_annotations else ""))
        self.ids = ids
        self.id_to_img_map = dict(enumerate(ids))
        self.failures = ImageFailures(len(ids))
        self._skips.summarize()

    def _has_size(self, img_id):
        info = self.coco.imgs[img_id]
        try:
            ok = int(info["width"]) > 0 and int(info["height"]) > 0 and "file_name" in info
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            self._skips.skip("image_without_size", "image id %s has no valid width/height/file_name; left out",
                             img_id)
        return ok

    def _parse_annotations(self, img_ids):
        """{image id: (boxes float32 [N, 4] xyxy, labels int64 [N])} of the usable non-crowd boxes."""
        boxes = {i: [] for i in img_ids}
        labels = {i: [] for i in img_ids}
        for ann in self.coco.dataset.get("annotations", []):
            if ann.get("iscrowd", 0):
                continue  # crowd regions are not objects to detect (as in the original)
            box = self._usable_box(ann, img_ids)
            if box is not None:
                boxes[ann["image_id"]].append(box)
                labels[ann["image_id"]].append(self.json_category_id_to_contiguous_id[ann["category_id"]])
        return {i: (np.asarray(boxes[i], np.float32).reshape(-1, 4), np.asarray(labels[i], np.int64))
                for i in img_ids}

    def _usable_box(self, ann, img_ids):
        """The clipped xyxy box of annotation ``ann``, or None (reported) if it cannot be used."""
        what = "annotation id {}".format(ann.get("id"))
        if ann.get("image_id") not in img_ids:
            self._skips.skip("unknown_image", "%s refers to image id %s, which is not usable", what,
                             ann.get("image_id"))
            return None
        if ann.get("category_id") not in self.json_category_id_to_contiguous_id:
            self._skips.skip("unknown_category", "%s has category id %s, not in the category list", what,
                             ann.get("category_id"))
            return None
        values = _bbox_values(ann.get("bbox"))
        if values is None:
            self._skips.skip("bad_box", "%s: bbox %r is not 4 finite numbers", what, ann.get("bbox"))
            return None
        x, y, w, h = values
        if w <= 0 or h <= 0:
            self._skips.skip("empty_box", "%s: box %s has zero or negative size", what, values)
            return None
        info = self.coco.imgs[ann["image_id"]]
        # pixel-inclusive corners, the conversion of BoxList(mode="xywh").convert("xyxy")
        xyxy = [x, y, x + max(w - 1, 0.0), y + max(h - 1, 0.0)]
        return clip_box(xyxy, int(info["width"]), int(info["height"]), self._skips, what)

    @property
    def class_names(self):
        """Names indexed by contiguous label: ``["__background", name of label 1, ...]`` (C + 1)."""
        return ["__background"] + [self.categories[self.contiguous_category_id_to_json_id[label]]
                                   for label in range(1, len(self.categories) + 1)]

    @property
    def skipped(self):
        """Counter of skipped items by reason (annotations at construction, images so far)."""
        return self._skips.counts + self.failures.counts()

    def __len__(self):
        return len(self.ids)

    @seeded_getitem
    def __getitem__(self, index):
        return next_readable_sample(self, index, self._read)

    def _read(self, index):
        """(image, target, index) for image ``index``, or None (reported) if it cannot be read."""
        info = self.get_img_info(index)
        path = os.path.join(self.root, info["file_name"])
        img = load_rgb_image(path)
        if isinstance(img, Exception):
            if self.failures.mark(index, ImageFailures.UNREADABLE):
                logger.warning("%s: cannot read image %s (%s); using the next image instead",
                               self._skips.owner, path, img)
            return None
        boxes, labels = self._targets[self.id_to_img_map[index]]
        target = BoxList(torch.from_numpy(boxes.copy()), img.size, mode="xyxy")
        target.add_field("labels", torch.from_numpy(labels.copy()))
        if img.size != (int(info["width"]), int(info["height"])):
            if self.failures.mark(index, ImageFailures.SIZE_MISMATCH):
                logger.warning("%s: image %s is %dx%d but the json says %sx%s; boxes kept, clipped to the image",
                               self._skips.owner, path, img.size[0], img.size[1], info["width"], info["height"])
            target = target.clip_to_image(remove_empty=True)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target, index

    def get_img_info(self, index):
        """The json "images" entry of image ``index``: dict with "height", "width", "file_name", "id"."""
        return self.coco.imgs[self.id_to_img_map[index]]

    def __repr__(self):
        return "{}(ann_file={!r}, root={!r}, images={})".format(type(self).__name__, self.ann_file, self.root,
                                                                len(self))
