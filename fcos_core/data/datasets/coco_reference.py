"""The previous COCO dataset: every process holds the pycocotools object of the whole json.

:class:`PycocotoolsCOCODataset` builds its targets from a pycocotools ``COCO`` index of the
completed json (segmentations and every other field included) and keeps a dict of Python objects
per image. It is kept as the reference that :class:`~fcos_core.data.datasets.coco.COCODataset`'s
compact records are tested against, and as the "before" of ``tools/benchmark_data.py``; it reads
images and answers ``dataset[i]`` as COCODataset does (the same methods).
"""
import numpy as np
import torch

from fcos_core.structures.bounding_box import BoxList

from .coco import COCODataset, _keep_only, _load_coco
from .coco_records import as_number as _as_number
from .coco_records import bbox_values as _bbox_values
from .skips import SkipLog, clip_box


class PycocotoolsCOCODataset(COCODataset):
    """COCODataset's targets from a pycocotools COCO of the whole completed json (the previous
    implementation). Arguments and attributes as :class:`COCODataset`; ``coco`` is built at
    construction, ``ids`` is a list and ``id_to_img_map`` a dict."""

    ids = id_to_img_map = None  # plain attributes here (properties over arrays in COCODataset)

    def __init__(self, ann_file, root, remove_images_without_annotations, transforms=None):
        self.ann_file, self.root, self.transforms = ann_file, root, transforms
        self.remove_images_without_annotations = remove_images_without_annotations
        self._skips = SkipLog("COCODataset({})".format(ann_file))
        self.coco = _load_coco(ann_file, self._skips)
        cat_ids = sorted(self.coco.getCatIds())
        self._set_categories({c: str(self.coco.cats[c].get("name", c)) for c in cat_ids})
        ids = sorted(i for i in self.coco.imgs if self._has_size(i))
        self._targets, kept_anns = self._parse_annotations(set(ids))
        if len(ids) < len(self.coco.imgs) or len(kept_anns) < len(self.coco.anns):
            self.coco = _keep_only(self.coco, set(ids), kept_anns)  # the evaluation sees what training uses
        if remove_images_without_annotations:
            kept = [i for i in ids if len(self._targets[i][1]) > 0]
            self._log_images_without_boxes(len(ids), len(kept))
            ids = kept
        self.ids = ids
        self.id_to_img_map = dict(enumerate(ids))
        self._finish_setup(len(ids))

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
        """({image id: (boxes float32 [N, 4] xyxy, labels int64 [N])} of the usable non-crowd boxes,
        set of the ids of the annotations kept for evaluation: those boxes and the valid crowd ones)."""
        boxes = {i: [] for i in img_ids}
        labels = {i: [] for i in img_ids}
        kept = set()
        for ann in self.coco.dataset["annotations"]:
            crowd = bool(_as_number(ann["iscrowd"]))  # crowd regions are not objects to detect
            box = self._usable_box(ann, img_ids, clip=not crowd)
            if box is None:
                continue
            kept.add(ann["id"])
            if not crowd:
                boxes[ann["image_id"]].append(box)
                labels[ann["image_id"]].append(self.json_category_id_to_contiguous_id[ann["category_id"]])
        targets = {i: (np.asarray(boxes[i], np.float32).reshape(-1, 4), np.asarray(labels[i], np.int64))
                   for i in img_ids}
        return targets, kept

    def _usable_box(self, ann, img_ids, clip=True):
        """The (clipped when ``clip``) xyxy box of annotation ``ann``, or None (reported) if it cannot be used."""
        what = "annotation id {}".format(ann.get("id"))
        if ann["image_id"] not in img_ids:
            self._skips.skip("unknown_image", "%s refers to image id %s, which is not usable", what, ann["image_id"])
            return None
        if ann["category_id"] not in self.json_category_id_to_contiguous_id:
            self._skips.skip("unknown_category", "%s has category id %s, not in the category list", what,
                             ann["category_id"])
            return None
        values = _bbox_values(ann.get("bbox"))
        if values is None:
            self._skips.skip("bad_box", "%s: bbox %r is not 4 finite numbers", what, ann.get("bbox"))
            return None
        x, y, w, h = values
        if w <= 0 or h <= 0:
            self._skips.skip("empty_box", "%s: box %s has zero or negative size", what, values)
            return None
        # pixel-inclusive corners, the conversion of BoxList(mode="xywh").convert("xyxy")
        xyxy = [x, y, x + max(w - 1, 0.0), y + max(h - 1, 0.0)]
        if not clip:
            return xyxy
        info = self.coco.imgs[ann["image_id"]]
        return clip_box(xyxy, int(info["width"]), int(info["height"]), self._skips, what)

    def get_groundtruth(self, index):
        """As :meth:`COCODataset.get_groundtruth`, from the dict of targets."""
        info = self.get_img_info(index)
        boxes, labels = self._targets[self.id_to_img_map[index]]
        target = BoxList(torch.from_numpy(boxes.copy()), (int(info["width"]), int(info["height"])), mode="xyxy")
        target.add_field("labels", torch.from_numpy(labels.copy()))
        return target

    def get_img_info(self, index):
        """The json "images" entry of image ``index`` (the pycocotools dict itself)."""
        return self.coco.imgs[self.id_to_img_map[index]]
