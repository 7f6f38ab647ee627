"""Compact training records of a COCO json: boxes, labels, sizes and file names in a few numpy arrays.

:func:`build_records` streams the json (:class:`~fcos_core.data.datasets.json_stream.ObjectMembers`:
one batch of Python objects at a time, segmentations included, never the whole document) and keeps
per image only what training reads. The arrays are shared by DataLoader workers without copying:
reading them touches no per-image Python object, so no page is written by reference counting
(detectron2's ``DatasetFromList(serialize=True)`` and mmengine's ``serialize_data`` pack records
into one numpy buffer for the same reason).

The rules are the ones of :class:`~fcos_core.data.datasets.coco.COCODataset` (its docstring):
entries that are not objects or lack "image_id"/"category_id" are dropped (``bad_annotation``),
images without an integer size or a file name are left out (``image_without_size``), then each
annotation is checked in order: ``unknown_image``, ``unknown_category``, ``bad_box`` (not 4 finite
numbers), ``empty_box``; non-crowd boxes are converted to pixel-inclusive xyxy and clipped
(:func:`~fcos_core.data.datasets.skips.clip_box`: ``outside_image``, ``too_small``, ``clipped``).
Each skip is counted through the SkipLog given (messages at most ``SkipLog.MAX_MESSAGES`` per reason);
messages name an annotation by its json "id", or by its place in the json ("annotation #k") when it
has no integer id (the ids the evaluation fills in are only made when ``dataset.coco`` is built).
"""
import ctypes
import gc
import json
import math
import os
from collections import Counter
from itertools import chain

import numpy as np

from .json_stream import NotAnObject, ObjectMembers
from .skips import clip_box

INVALID_ID = np.iinfo(np.int64).min  # an id that no image or category has: matches nothing
_NAN4 = [math.nan] * 4
_MAX_BAD_BOX_REPRS = 1000  # raw "bbox" values kept for the messages


def as_number(value):
    """``value`` as a finite float, or None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def bbox_values(bbox):
    """(x, y, w, h) floats from a COCO "bbox", or None if it is not 4 finite numbers."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    if all(type(v) in (float, int) for v in bbox):  # the common case, without the checks of as_number
        values = [float(v) for v in bbox]
        return values if all(map(math.isfinite, values)) else None
    values = [as_number(v) for v in bbox]
    return None if None in values else values


def read_json(ann_file):
    """The parsed json of ``ann_file`` (a dict with a non-empty "images" list), with clear errors."""
    if not os.path.isfile(ann_file):
        raise FileNotFoundError("COCO annotation file {} not found".format(os.path.abspath(ann_file)))
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError("COCO annotation file {} is not valid JSON: {}".format(ann_file, e)) from None
    if not isinstance(data, dict) or not data.get("images"):
        raise ValueError("COCO annotation file {} lists no images".format(ann_file))
    check_categories(ann_file, data.get("categories"))
    return data


def check_categories(ann_file, categories):
    """Raise ValueError unless ``categories`` is a non-empty list of dicts with an "id"."""
    if not isinstance(categories, list) or not categories:
        raise ValueError("COCO annotation file {} lists no categories (a \"categories\" list of "
                         "{{\"id\", \"name\"}} is needed)".format(ann_file))
    bad = [c for c in categories if not isinstance(c, dict) or "id" not in c]
    if bad:
        raise ValueError("COCO annotation file {}: category {!r} has no \"id\"".format(ann_file, bad[0]))


def _int_key(value):
    """``value`` as the int64 that a dict lookup would match (3, 3.0 and True as 3), else INVALID_ID."""
    if type(value) is not int:
        if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
            value = int(value)
        else:
            return INVALID_ID
    return value if -2 ** 63 < value < 2 ** 63 else INVALID_ID


class _AnnotationColumns:
    """The fields of the annotations that training and the completion log need, as arrays per batch."""

    def __init__(self):
        self.parts = []
        self.filled = Counter()
        self.bad_boxes = {}  # entry index -> raw "bbox", for the messages
        self.num_entries = 0

    def add(self, batch, skips):
        """Append the annotations of ``batch`` (parsed json list); reports the unusable entries."""
        part = _fast_columns(batch, self.num_entries) or self._slow_columns(batch, skips)
        if len(self.bad_boxes) < _MAX_BAD_BOX_REPRS:
            for k in part["entry"][~np.isfinite(part["boxes"]).all(axis=1)][:_MAX_BAD_BOX_REPRS].tolist():
                self.bad_boxes[k] = batch[k - self.num_entries].get("bbox")
        self.filled["iscrowd"] += part.pop("crowd_filled")
        self.filled["area"] += part.pop("area_filled")
        self.parts.append(part)
        self.num_entries += len(batch)

    def _slow_columns(self, batch, skips):
        """The columns of ``batch`` one annotation at a time (any json the rules accept)."""
        cols = {"entry": [], "image": [], "category": [], "id": [], "crowd": [], "boxes": []}
        crowd_filled = area_filled = 0
        for k, ann in enumerate(batch, start=self.num_entries):
            if type(ann) is not dict or "image_id" not in ann or "category_id" not in ann:
                skips.skip("bad_annotation", "annotation %.80r has no image_id or category_id; dropped", ann)
                continue
            ann_id, crowd, box = ann.get("id"), ann.get("iscrowd"), bbox_values(ann.get("bbox"))
            if type(crowd) is not int:
                crowd = float(crowd) if isinstance(crowd, bool) else as_number(crowd)
                crowd_filled += crowd is None
            area_filled += box is not None and as_number(ann.get("area")) is None
            for key, value in (("entry", k), ("image", _int_key(ann["image_id"])), ("crowd", bool(crowd)),
                               ("category", _int_key(ann["category_id"])), ("boxes", box or _NAN4),
                               ("id", _int_key(ann_id) if isinstance(ann_id, int) else INVALID_ID)):
                cols[key].append(value)
        return dict(_as_arrays(cols), crowd_filled=crowd_filled, area_filled=area_filled)

    def arrays(self):
        """{"entry", "image", "category", "id": int64 [A], "crowd": bool [A], "boxes": float64 [A, 4] xywh
        (NaN where not 4 finite numbers)} of all batches; counts the ids to be filled in."""
        out = {key: np.concatenate([p[key] for p in self.parts]) if self.parts else _as_arrays({})[key]
               for key in ("entry", "image", "category", "id", "crowd", "boxes")}
        self.parts = []
        ids = out["id"]
        valid = ids[ids != INVALID_ID]
        self.filled["id"] = int((ids == INVALID_ID).sum()) + len(valid) - len(np.unique(valid))
        self.filled = +self.filled
        return out


def _as_arrays(cols):
    """The lists of a columns dict as typed numpy arrays (missing keys: empty arrays)."""
    types = {"entry": np.int64, "image": np.int64, "category": np.int64, "id": np.int64, "crowd": bool,
             "boxes": np.float64}
    out = {key: np.asarray(cols.get(key, []), dtype) for key, dtype in types.items()}
    out["boxes"] = out["boxes"].reshape(-1, 4)
    return out


def _fast_columns(batch, first):
    """The columns of ``batch`` (entries ``first``...) when every entry is an object with integer
    image_id/category_id/id/iscrowd, a bbox of 4 numbers and a numeric area (the common case), else None.
    The checks are type sets made by ``map`` (C loops), not a Python loop per annotation."""
    if set(map(type, batch)) - {dict}:
        return None
    try:
        image, category = [a["image_id"] for a in batch], [a["category_id"] for a in batch]
    except KeyError:
        return None
    ids, crowd = [a.get("id") for a in batch], [a.get("iscrowd") for a in batch]
    boxes, areas = [a.get("bbox") for a in batch], [a.get("area") for a in batch]
    if (set(map(type, chain(image, category, ids, crowd))) - {int} or set(map(type, boxes)) - {list}
            or set(map(len, boxes)) - {4} or set(map(type, chain(areas, chain.from_iterable(boxes)))) - {float, int}):
        return None
    try:
        out = _as_arrays({"entry": range(first, first + len(batch)), "image": image, "category": category,
                          "id": ids, "crowd": [v != 0 for v in crowd], "boxes": boxes})
    except OverflowError:  # an id beyond int64
        return None
    finite = np.isfinite(out["boxes"]).all(axis=1)
    out["boxes"][~finite] = math.nan
    out["crowd_filled"] = 0
    out["area_filled"] = int((finite & ~np.isfinite(np.asarray(areas, np.float64))).sum())
    return out


def _image_table(doc, ann_file, skips):
    """{image id: (file_name, width, height, has file_name)} of the json's "images" (the last of repeated ids)."""
    table, count = {}, 0
    for batch in doc.batches("images"):
        if not isinstance(batch, list):
            break
        count += len(batch)
        for img in batch:
            if type(img) is dict and "id" in img:
                table[img["id"]] = (img.get("file_name"), img.get("width"), img.get("height"), "file_name" in img)
            else:
                skips.skip("image_without_size", "image entry %.80r has no id; left out", img)
    if not count:
        raise ValueError("COCO annotation file {} lists no images".format(ann_file))
    bad = [i for i in table if type(i) is not int or _int_key(i) == INVALID_ID]
    if bad:
        raise ValueError("COCO annotation file {}: image id {!r} is not an integer (COCO ids are integers)".format(
            ann_file, bad[0]))
    return table


def _image_arrays(table, skips):
    """(ids int64 [N] sorted, sizes int32 [N, 2] (width, height), names uint8 buffer, name offsets
    int64 [N + 1]) of the images of ``table`` that have a valid size and a file name."""
    ids, sizes, names = [], [], []
    for img_id in sorted(table):
        name, w, h, has_name = table[img_id]
        try:
            ok = int(w) > 0 and int(h) > 0 and has_name
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            skips.skip("image_without_size", "image id %s has no valid width/height/file_name; left out", img_id)
            continue
        ids.append(img_id)
        sizes.append((int(w), int(h)))
        names.append(str(name).encode("utf-8"))
    offsets = np.zeros(len(names) + 1, np.int64)
    np.cumsum([len(n) for n in names], out=offsets[1:])
    return (np.asarray(ids, np.int64), np.asarray(sizes, np.int32).reshape(-1, 2),
            np.frombuffer(b"".join(names), np.uint8).copy(), offsets)


def _lookup(sorted_keys, values):
    """(index of each value in ``sorted_keys`` (int64, clipped), bool: found)."""
    pos = np.clip(np.searchsorted(sorted_keys, values), 0, max(len(sorted_keys) - 1, 0))
    found = (sorted_keys[pos] == values) & (values != INVALID_ID) if len(sorted_keys) else np.zeros(len(values), bool)
    return pos, found


def _describe(cols, a):
    """How messages name annotation ``a`` (row of ``cols``): its json id, else its place in the json."""
    ann_id = int(cols["id"][a])
    return ("annotation id {}".format(ann_id) if ann_id != INVALID_ID else
            "annotation #{} (no integer id)".format(int(cols["entry"][a])))


def _report(skips, cols, rows, reason, message, value):
    """One skip under ``reason`` for each row of ``rows``: ``message % (name, value(row))``."""
    for a in np.flatnonzero(rows).tolist():
        skips.skip(reason, message, _describe(cols, a), value(a))


def _clip(xywh, sizes):
    """(xyxy float64 [A, 4] pixel-inclusive, clipped float64 [A, 4], dropped bool [A], moved > 1 px bool [A])
    for boxes ``xywh`` [A, 4] (w, h > 0) in images of ``sizes`` [A, 2] (width, height): the arithmetic
    of :func:`~fcos_core.data.datasets.skips.clip_box`, vectorized."""
    x, y, w, h = xywh.T
    xyxy = np.stack([x, y, x + np.maximum(w - 1, 0.0), y + np.maximum(h - 1, 0.0)], axis=1)
    limit = np.repeat(sizes.astype(np.float64) - 1.0, 2, axis=1)[:, [0, 2, 1, 3]]  # W-1, H-1, W-1, H-1
    clipped = np.minimum(np.maximum(xyxy, 0.0), limit)
    dropped = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    moved = np.abs(clipped - xyxy).max(axis=1) > 1.0 if len(xyxy) else np.zeros(0, bool)
    return xyxy, clipped, dropped, moved


def _check(cols, image_ids, sizes, category_ids, bad_boxes, skips):
    """(train rows, evaluation rows, image index [A], label index [A], clipped xyxy [A, 4]) of the
    annotation columns ``cols``; every unusable annotation is reported through ``skips``."""
    img, img_ok = _lookup(image_ids, cols["image"])
    cat, cat_ok = _lookup(category_ids, cols["category"])
    boxes, crowd = cols["boxes"], cols["crowd"]
    finite = np.isfinite(boxes).all(axis=1)
    known = img_ok & cat_ok
    nonempty = finite & (np.nan_to_num(boxes[:, 2]) > 0) & (np.nan_to_num(boxes[:, 3]) > 0)
    _report(skips, cols, ~img_ok, "unknown_image", "%s refers to image id %s, which is not usable",
            lambda a: cols["image"][a] if cols["image"][a] != INVALID_ID else "(not an integer)")
    _report(skips, cols, img_ok & ~cat_ok, "unknown_category", "%s has category id %s, not in the category list",
            lambda a: cols["category"][a] if cols["category"][a] != INVALID_ID else "(not an integer)")
    _report(skips, cols, known & ~finite, "bad_box", "%s: bbox %r is not 4 finite numbers",
            lambda a: bad_boxes.get(int(cols["entry"][a]), "(not kept)"))
    _report(skips, cols, known & finite & ~nonempty, "empty_box", "%s: box %s has zero or negative size",
            lambda a: boxes[a].tolist())
    usable = known & nonempty
    rows = np.flatnonzero(usable & ~crowd)
    xyxy, clipped, dropped, moved = _clip(boxes[rows], sizes[img[rows]])
    for r in np.flatnonzero(dropped | moved).tolist():  # clip_box gives the messages and counts
        w, h = sizes[img[rows[r]]].tolist()
        clip_box(xyxy[r].tolist(), w, h, skips, _describe(cols, rows[r]))
    train = np.zeros(len(usable), bool)
    train[rows[~dropped]] = True
    out = np.zeros((len(usable), 4))
    out[rows] = clipped
    return train, train | (usable & crowd), img, cat, out


class CompactRecords:
    """Per-image training records in numpy arrays (no per-image Python object).

    Attributes: ``image_ids`` (int64 [N], sorted json ids), ``sizes`` (int32 [N, 2]: width, height
    in pixels), ``names`` (uint8: the utf-8 file names one after another) with ``name_offsets``
    (int64 [N + 1]), ``boxes`` (float32 [M, 4], xyxy pixel-inclusive, clipped to the image) and
    ``labels`` (int32 [M], contiguous 1..C) of all images one after another with ``box_offsets``
    (int64 [N + 1]), ``eval_bits`` (np.packbits of a bool per json annotation entry: kept for the
    evaluation's ground truth: the training boxes and the valid crowd boxes), ``num_entries``.
    """

    def __init__(self, image_ids, sizes, names, name_offsets, boxes, labels, box_offsets, eval_bits, num_entries):
        self.image_ids, self.sizes, self.names, self.name_offsets = image_ids, sizes, names, name_offsets
        self.boxes, self.labels, self.box_offsets = boxes, labels, box_offsets
        self.eval_bits, self.num_entries = eval_bits, num_entries

    def __len__(self):
        return len(self.image_ids)

    def file_name(self, i):
        """The json "file_name" of image ``i`` (str)."""
        return self.names[self.name_offsets[i]:self.name_offsets[i + 1]].tobytes().decode("utf-8")

    def target(self, i):
        """(boxes float32 [n, 4] xyxy, labels int32 [n]) of image ``i``: views, not copies."""
        a, b = self.box_offsets[i], self.box_offsets[i + 1]
        return self.boxes[a:b], self.labels[a:b]

    def num_boxes(self):
        """int64 [N]: training boxes per image."""
        return np.diff(self.box_offsets)

    def eval_entries(self):
        """bool [num_entries]: the json annotation entries kept for the evaluation's ground truth."""
        return np.unpackbits(self.eval_bits, count=self.num_entries).astype(bool)

    def select(self, indices):
        """The records of images ``indices`` (int64, ascending), a new CompactRecords."""
        from .json_stream import range_positions

        name_pos, name_len = range_positions(self.name_offsets[indices], self.name_offsets[indices + 1])
        box_pos, box_len = range_positions(self.box_offsets[indices], self.box_offsets[indices + 1])
        return CompactRecords(self.image_ids[indices], self.sizes[indices], self.names[name_pos],
                              np.concatenate([[0], np.cumsum(name_len)]), self.boxes[box_pos], self.labels[box_pos],
                              np.concatenate([[0], np.cumsum(box_len)]), self.eval_bits, self.num_entries)

    @property
    def nbytes(self):
        """Bytes held by the arrays."""
        return sum(a.nbytes for a in (self.image_ids, self.sizes, self.names, self.name_offsets, self.boxes,
                                      self.labels, self.box_offsets, self.eval_bits))


def _categories(ann_file, categories):
    """{json category id: name} of a valid "categories" list (integer ids; the last of repeated ids)."""
    check_categories(ann_file, categories)
    bad = [c["id"] for c in categories if type(c["id"]) is not int]
    if bad:
        raise ValueError("COCO annotation file {}: category id {!r} is not an integer".format(ann_file, bad[0]))
    return {c["id"]: str(c.get("name", c["id"])) for c in categories}


def build_records(ann_file, skips):
    """Stream the COCO json ``ann_file`` into :class:`CompactRecords` (see the module docstring).

    Arguments:
        ann_file (str): COCO instances json.
        skips (SkipLog): counts and reports what is left out.

    Returns:
        (CompactRecords of every image with a valid size, {json category id: name},
        Counter of the fields a pycocotools evaluation needs filled in ("area", "iscrowd", "id"),
        number of annotation entries that are objects with image_id and category_id).

    Raises:
        FileNotFoundError; ValueError naming the file for invalid JSON, no images, no categories.
    """
    if not os.path.isfile(ann_file):
        raise FileNotFoundError("COCO annotation file {} not found".format(os.path.abspath(ann_file)))
    enabled = gc.isenabled()
    gc.disable()  # the parsed batches are acyclic and freed by reference counting; collections cost 5-10x
    try:
        return _build_records(ann_file, skips)
    finally:
        if enabled:
            gc.enable()
        release_freed_memory()


def release_freed_memory():
    """Give the heap memory freed by the parse back to the system (glibc's ``malloc_trim(0)``; a no-op
    elsewhere). Without it the freed batches and scan buffers stay in this process's private memory:
    glibc raises its mmap threshold after the first large free, so later buffers come from the heap."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _build_records(ann_file, skips):
    try:
        doc = ObjectMembers(ann_file, prune_depth=5)  # not the segmentations' coordinates
    except NotAnObject:
        read_json(ann_file)  # raises its own error for a json that is not an object
        raise
    except ValueError as e:
        raise ValueError("COCO annotation file {}".format(e)) from None
    with doc:
        table = _image_table(doc, ann_file, skips)
        categories = _categories(ann_file, doc.value("categories"))
        cols = _AnnotationColumns()
        for batch in doc.batches("annotations"):
            cols.add(batch if isinstance(batch, list) else [], skips)
    image_ids, sizes, names, name_offsets = _image_arrays(table, skips)
    del table
    arrays = cols.arrays()
    category_ids = np.asarray(sorted(categories), np.int64)
    train, keep, img, cat, xyxy = _check(arrays, image_ids, sizes, category_ids, cols.bad_boxes, skips)
    order = np.argsort(img[train], kind="stable")
    box_offsets = np.zeros(len(image_ids) + 1, np.int64)
    np.cumsum(np.bincount(img[train], minlength=len(image_ids)), out=box_offsets[1:])
    eval_mask = np.zeros(cols.num_entries, bool)
    eval_mask[arrays["entry"][keep]] = True
    records = CompactRecords(image_ids, sizes, names, name_offsets, xyxy[train][order].astype(np.float32),
                             (cat[train][order] + 1).astype(np.int32), box_offsets, np.packbits(eval_mask),
                             cols.num_entries)
    return records, categories, cols.filled, len(arrays["entry"])
