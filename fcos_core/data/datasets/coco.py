"""COCO-format detection dataset: the json as annotation tools write it, made complete for pycocotools.

Training reads compact records (:mod:`~fcos_core.data.datasets.coco_records`): the json is streamed
once and only boxes, labels, image sizes and file names are kept, in numpy arrays that DataLoader
workers share without copying. The evaluation's ground truth (``dataset.coco``, a pycocotools
``COCO``) is built only when asked for, from the json read again (the file on disk is never
changed) and completed in memory, so that any json that training accepts also evaluates:

- ``area`` missing or not a number: ``w * h`` of the ``bbox`` (as COCO does for boxes);
- ``iscrowd`` missing or not a number: 0; ``id`` missing or repeated: a new unique id;
- ``segmentation``: absent or in any form, never read (FCOS predicts boxes only) and not kept;
- annotations that training cannot use (see :func:`data_skip_counts`) are left out of the
  evaluation's ground truth too, as are images without a valid size.

One log line at construction says what the evaluation will fill in, with counts. Bad data is
reported and counted through the bookkeeping of :mod:`fcos_core.data.datasets.skips` (re-exported
here). :class:`~fcos_core.data.datasets.coco_reference.PycocotoolsCOCODataset` is the previous
implementation (every rank holds the pycocotools object), kept as the reference of the tests and
the benchmark.
"""
import contextlib
import io
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from pycocotools.coco import COCO

from fcos_core.structures.bounding_box import BoxList
from fcos_core.utils.rng import seeded_getitem

from .coco_records import as_number as _as_number
from .coco_records import bbox_values as _bbox_values
from .coco_records import build_records, release_freed_memory
from .coco_records import read_json as _read_json
from .image_io import READ_ERRORS, read_image_for_size
from .skips import (  # noqa: F401 (SkipLog, load_rgb_image and data_skip_counts are re-exported)
    ImageFailures,
    SkipLog,
    clip_box,
    data_skip_counts,
    load_rgb_image,
    next_readable_sample,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- COCO json
def complete_annotations(data, skips):
    """Complete the annotations of a parsed COCO json ``data`` in place, so pycocotools can index
    and evaluate them; entries it cannot index (not an object, no "image_id" / "category_id"; images
    without "id") are removed and reported through ``skips`` (a SkipLog).

    Returns:
        Counter: how many annotations got each field filled in ("area", "iscrowd", "id").
    """
    images = [img for img in data["images"] if isinstance(img, dict) and "id" in img]
    for img in data["images"]:
        if not (isinstance(img, dict) and "id" in img):
            skips.skip("image_without_size", "image entry %.80r has no id; left out", img)
    annotations = []
    for ann in data.get("annotations") or []:
        if isinstance(ann, dict) and "image_id" in ann and "category_id" in ann:
            annotations.append(ann)
        else:
            skips.skip("bad_annotation", "annotation %.80r has no image_id or category_id; dropped", ann)
    filled = Counter()
    ids = Counter(ann.get("id") for ann in annotations)
    next_id = max([i for i in ids if isinstance(i, int)] + [0]) + 1
    for ann in annotations:
        if not isinstance(ann.get("id"), int) or ids[ann["id"]] > 1:
            ids[ann.get("id")] -= 1  # the last of repeated ids keeps it
            ann["id"], next_id = next_id, next_id + 1
            filled["id"] += 1
        crowd = ann.get("iscrowd")
        crowd = float(crowd) if isinstance(crowd, bool) else _as_number(crowd)
        filled["iscrowd"] += crowd is None
        ann["iscrowd"] = int(bool(crowd))  # 0/1: pycocotools takes any truthy value ("0" too) as crowd
        box = _bbox_values(ann.get("bbox"))
        if box is not None:
            ann["bbox"] = box  # numbers as floats: pycocotools computes with them as they are
            area = _as_number(ann.get("area"))
            filled["area"] += area is None
            ann["area"] = max(box[2], 0.0) * max(box[3], 0.0) if area is None else area
    filled = +filled  # drop zero counts
    data["images"], data["annotations"] = images, annotations
    return filled


def _log_completed(ann_file, filled, num_annotations):
    if filled:
        logger.info("COCO annotation file %s: of its %d annotations, filled in %s (in memory; area = w*h "
                    "of the bbox, iscrowd = 0, new unique ids where missing or repeated)", ann_file,
                    num_annotations, ", ".join("{} for {}".format(k, filled[k]) for k in sorted(filled)))


def _index(data):
    """A pycocotools COCO object over the json dict ``data`` (its printing kept out of the log)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _load_coco(ann_file, skips=None):
    """pycocotools COCO object for ``ann_file``, completed by :func:`complete_annotations`; clear
    errors for a missing or broken file. ``skips``: SkipLog for the entries left out."""
    data = _read_json(ann_file)
    filled = complete_annotations(data, skips or SkipLog("COCO annotation file {}".format(ann_file)))
    _log_completed(ann_file, filled, len(data["annotations"]))
    return _index(data)


def _keep_only(coco, img_ids, ann_ids):
    """Re-index ``coco`` with only the images ``img_ids`` and annotations ``ann_ids`` (sets of ids)."""
    data = dict(coco.dataset)
    data["images"] = [img for img in data["images"] if img["id"] in img_ids]
    data["annotations"] = [ann for ann in data["annotations"] if ann["id"] in ann_ids]
    return _index(data)


class COCODataset(torch.utils.data.Dataset):
    """Images and boxes of a COCO-format json file, as annotation tools write it, held as compact records.

    Arguments:
        ann_file (str): COCO json ("images", "annotations", "categories"); "area", "iscrowd" and
            "segmentation" may be missing (see the module docstring). Category ids need not be
            contiguous (e.g. 3, 7, 12).
        root (str): folder that the images' ``file_name`` are relative to (``file_name`` may hold
            sub-folders, e.g. "batch1/img.jpg").
        remove_images_without_annotations (bool): True for training: images with no usable box are
            dropped, and an unreadable image is replaced by the next readable one. False for
            testing: every image is evaluated (images without boxes are negatives: detections on
            them count as false positives), and an unreadable image gives a black placeholder at its
            index, which the evaluation leaves out (flagged in ``failures``, named in a warning).
        transforms (callable or None): ``(image, target) -> (image, target)``.

    ``dataset[i]`` is ``(image, target, i)``: image = PIL RGB image (or what the transforms make of
    it: a [3, H, W] tensor, BGR 0-255 minus the pixel mean with the default config), target =
    BoxList xyxy (pixel-inclusive, from COCO xywh with x2 = x + w - 1) in pixels of the image, with
    field "labels" (int64 [N], contiguous 1..C). Crowd boxes (iscrowd=1) are left out.
    A :class:`~fcos_core.utils.rng.SeededIndex` ``i`` (the training sampler's) runs the random
    transforms with generators seeded from ``i.seed``.

    Images are read by :func:`~fcos_core.data.datasets.image_io.read_image_for_size`: grey, palette,
    RGBA (alpha dropped) and 16-bit (scaled by the image's range) images become RGB, and **the EXIF
    orientation is applied**, as annotation tools (CVAT, Label Studio, browsers) display the image:
    the json's width/height and boxes are taken to describe the displayed image. When the json gives
    the stored, unrotated width/height of a 90-degree-rotated JPEG instead, its boxes were drawn on
    the raw pixels: the image is then used unrotated and a warning names the file (a rotation that
    keeps the size, such as 180 degrees, cannot be told apart and follows the convention).

    Attributes: ``coco`` (pycocotools COCO of the completed json: the evaluation's ground truth, built
    on first use), ``ids`` (json image ids, sorted; a read-only sequence over an array),
    ``id_to_img_map`` (index -> json image id, a read-only mapping),
    ``json_category_id_to_contiguous_id`` and ``contiguous_category_id_to_json_id`` (sorted json
    category ids <-> 1..C), ``categories`` (json id -> name), ``class_names``, ``skipped``
    (Counter, see :func:`data_skip_counts`).
    """

    def __init__(self, ann_file, root, remove_images_without_annotations, transforms=None):
        self.ann_file, self.root, self.transforms = ann_file, root, transforms
        self.remove_images_without_annotations = remove_images_without_annotations
        self._skips = SkipLog("COCODataset({})".format(ann_file))
        records, categories, filled, num_annotations = build_records(ann_file, self._skips)
        _log_completed(ann_file, filled, num_annotations)
        self._set_categories(categories)
        self._eval_image_ids = records.image_ids  # the evaluation keeps images without boxes
        if remove_images_without_annotations:
            records = records.select(np.flatnonzero(records.num_boxes() > 0))
            release_freed_memory()  # the arrays of all images, just freed
            self._log_images_without_boxes(len(self._eval_image_ids), len(records))
        self._records = records
        self._coco = None
        self._finish_setup(len(records))

    def _set_categories(self, categories):
        """Category attributes from {json category id: name}."""
        cat_ids = sorted(categories)
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.contiguous_category_id_to_json_id = {v: k for k, v in self.json_category_id_to_contiguous_id.items()}
        self.categories = {c: categories[c] for c in cat_ids}

    def _log_images_without_boxes(self, before, after):
        if after < before:
            logger.info("%s: %d of %d images have no usable box and are left out of training",
                        self._skips.owner, before - after, before)

    def _finish_setup(self, num_images):
        """Checks there are images, makes the per-image failure flags, logs the skips and the labels."""
        if not num_images:
            raise ValueError("{}: no usable image{}".format(
                self._skips.owner, " with annotations" if self.remove_images_without_annotations else ""))
        self.failures = ImageFailures(num_images)
        self._image_log = SkipLog(self._skips.owner)  # image warnings given by this process, by flag
        self._skips.summarize()
        logger.info("%s: %d images; label: name (json category id): %s", self._skips.owner, num_images, ", ".join(
            "{}: {} ({})".format(label, self.categories[c], c)
            for label, c in sorted(self.contiguous_category_id_to_json_id.items())))

    @property
    def ids(self):
        """The json image ids by index (a read-only sequence of int, ascending)."""
        return _IntView(self._records.image_ids)

    @property
    def id_to_img_map(self):
        """{index: json image id} (a read-only mapping)."""
        return _IndexToId(self._records.image_ids)

    @property
    def coco(self):
        """The evaluation's ground truth, a pycocotools COCO built on first use (in this process) from the
        json completed in memory: the images with a valid size, the annotations training uses and the
        valid crowd ones (see the module docstring), without segmentations."""
        if self._coco is None:
            self._coco = self._ground_truth()
        return self._coco

    @coco.setter
    def coco(self, value):
        self._coco = value

    def _ground_truth(self):
        data = _read_json(self.ann_file)
        entries = data.get("annotations") or []
        keep = self._records.eval_entries()
        if not isinstance(entries, list) or len(entries) != len(keep):
            raise RuntimeError("COCO annotation file {} changed since the dataset was built".format(self.ann_file))
        kept = {id(ann) for ann, k in zip(entries, keep.tolist()) if k}
        complete_annotations(data, _QuietSkips(self._skips.owner))  # reported at construction already
        image_ids = set(self._eval_image_ids.tolist())
        data["images"] = [img for img in data["images"] if img["id"] in image_ids]
        data["annotations"] = [{k: v for k, v in ann.items() if k != "segmentation"}
                               for ann in data["annotations"] if id(ann) in kept]
        return _index(data)

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
        if self.remove_images_without_annotations:
            return next_readable_sample(self, index, self._read)
        # evaluation: keep each sample at its index (predictions are matched to images by it)
        return self._read(index) or self._placeholder(index)

    def _image_path(self, file_name):
        """``root``/``file_name``; a Windows-made name ("batch1\\img.jpg") is tried with "/" too."""
        path = os.path.join(self.root, file_name)
        if "\\" in file_name and not os.path.exists(path):
            path = os.path.join(self.root, *file_name.split("\\"))
        return path

    def _placeholder(self, index):
        """(black image of the json size, no boxes, index): the sample of an unreadable image in
        evaluation, which leaves that image out (it is flagged in ``failures``)."""
        info = self.get_img_info(index)
        img = Image.new("RGB", (int(info["width"]), int(info["height"])))
        target = BoxList(torch.zeros(0, 4), img.size, mode="xyxy")
        target.add_field("labels", torch.zeros(0, dtype=torch.int64))
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target, index

    def _read(self, index):
        """(image, target, index) for image ``index``, or None (reported) if it cannot be read."""
        info = self.get_img_info(index)
        path = self._image_path(str(info["file_name"]))
        json_size = (int(info["width"]), int(info["height"]))
        try:
            img, orientation = read_image_for_size(path, json_size)
        except READ_ERRORS as e:
            self._notice(index, ImageFailures.UNREADABLE, "cannot read image %s (%s); %s", path, e,
                         "using the next image instead" if self.remove_images_without_annotations
                         else "it is left out of the evaluation")
            return None
        if orientation:
            self._notice(index, ImageFailures.EXIF_NOT_APPLIED,
                         "image %s has EXIF orientation %d, but the json gives its stored size %dx%d, not the "
                         "displayed %dx%d: the boxes are taken as drawn on the unrotated pixels and the image "
                         "is used unrotated (the convention is EXIF applied, as annotation tools display it)",
                         path, orientation, img.size[0], img.size[1], img.size[1], img.size[0])
        target = self.get_groundtruth(index)
        target.size = img.size  # a new BoxList of ours; the json's size unless the warning below fires
        if img.size != json_size:
            self._notice(index, ImageFailures.SIZE_MISMATCH,
                         "image %s is %dx%d (EXIF orientation applied) but the json says %sx%s; boxes kept, "
                         "clipped to the image", path, img.size[0], img.size[1], info["width"], info["height"])
            target = target.clip_to_image(remove_empty=True)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target, index

    def _notice(self, index, flag, message, *args):
        """Flag image ``index`` and warn once per image (at most SkipLog.MAX_MESSAGES per flag here)."""
        if self.failures.mark(index, flag):
            self._image_log.skip(ImageFailures.NAMES[flag], message, *args)

    def get_groundtruth(self, index):
        """The training boxes of image ``index`` without reading the image: BoxList xyxy
        (pixel-inclusive) in the json's image size, field "labels" (int64 [N], 1..C). Crowd and
        unusable annotations are left out and boxes clipped, by the rules of the class docstring."""
        boxes, labels = self._records.target(index)
        width, height = self._records.sizes[index].tolist()
        target = BoxList(torch.from_numpy(boxes.copy()), (width, height), mode="xyxy")
        target.add_field("labels", torch.from_numpy(labels.astype(np.int64)))
        return target

    def get_img_info(self, index):
        """The json "images" entry of image ``index``: dict with "height", "width" (int, pixels),
        "file_name" (str), "id" (int), made from the records (other json keys are not kept)."""
        width, height = self._records.sizes[index].tolist()
        return {"id": int(self._records.image_ids[index]), "file_name": self._records.file_name(index),
                "width": width, "height": height}

    def __repr__(self):
        return "{}(ann_file={!r}, root={!r}, images={})".format(type(self).__name__, self.ann_file, self.root,
                                                                len(self))


class _QuietSkips(SkipLog):
    """A SkipLog that only counts (for a second pass over what was reported already)."""

    def skip(self, reason, message, *args):
        self.counts[reason] += 1


class _IntView(Sequence):
    """A read-only sequence of Python ints over an int64 array; equal to a list or tuple of the same values."""

    def __init__(self, array):
        self._array = array

    def __len__(self):
        return len(self._array)

    def __getitem__(self, i):
        return self._array[i].tolist()

    def __eq__(self, other):
        if isinstance(other, (list, tuple, _IntView)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return repr(self._array.tolist())


class _IndexToId(Mapping):
    """{index: json image id} over an int64 array, without a dict per image."""

    def __init__(self, array):
        self._array = array

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self._array):
            raise KeyError(index)
        return int(self._array[index])

    def __iter__(self):
        return iter(range(len(self._array)))

    def __len__(self):
        return len(self._array)
