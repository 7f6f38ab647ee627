"""Pascal VOC detection dataset, read from the VOC xml annotation files."""
import logging
import os
import xml.etree.ElementTree as ET

import numpy as np
import torch
import torch.utils.data

from fcos_core.structures.bounding_box import BoxList
from fcos_core.utils.rng import seeded_getitem

from .coco import ImageFailures, SkipLog, clip_box, load_rgb_image, next_readable_sample

logger = logging.getLogger(__name__)


def _text(node, tag, default=None):
    """Stripped text of child ``tag`` of ``node``, or ``default`` if missing."""
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text is not None else default


class PascalVOCDataset(torch.utils.data.Dataset):
    """Images and boxes of one VOC split.

    Arguments:
        data_dir (str): e.g. ``datasets/voc/VOC2007``, holding ``JPEGImages/<id>.jpg``,
            ``Annotations/<id>.xml`` and ``ImageSets/Main/<split>.txt``.
        split (str): "train", "val", "trainval" or "test".
        use_difficult (bool): keep the objects marked difficult (False for training, True for
            testing, where VOC evaluation ignores them through the "difficult" field).
        transforms (callable or None): ``(image, target) -> (image, target)``.

    ``dataset[i]`` is ``(image, target, i)``; target = BoxList xyxy in pixels (VOC's 1-based
    inclusive corners minus 1) with fields "labels" (int64 [N], 1..20 in ``CLASSES`` order) and
    "difficult" (bool [N]). All xml files are parsed at construction, so bad entries are reported
    once, in the main process; ``skipped`` counts them (see ``data_skip_counts``).
    A :class:`~fcos_core.utils.rng.SeededIndex` ``i`` seeds the random transforms with ``i.seed``.
    """

    CLASSES = (
        "__background__ ", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
        "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
        "sofa", "train", "tvmonitor",
    )

    def __init__(self, data_dir, split, use_difficult=False, transforms=None):
        self.root, self.image_set = data_dir, split
        self.keep_difficult, self.transforms = use_difficult, transforms
        self._annopath = os.path.join(self.root, "Annotations", "%s.xml")
        self._imgpath = os.path.join(self.root, "JPEGImages", "%s.jpg")
        self.class_to_ind = {name.strip(): i for i, name in enumerate(self.CLASSES)}
        self._skips = SkipLog("PascalVOCDataset({}, {})".format(data_dir, split))
        records = {}
        for img_id in self._read_split():
            record = self._parse(img_id)
            if record is not None:
                records[img_id] = record
        if not records:
            raise ValueError("{}: no usable image".format(self._skips.owner))
        self.ids = list(records)
        self._records = [records[i] for i in self.ids]
        self.id_to_img_map = dict(enumerate(self.ids))
        self.failures = ImageFailures(len(self.ids))
        self._skips.summarize()

    def _read_split(self):
        """The image ids listed in ImageSets/Main/<split>.txt."""
        path = os.path.join(self.root, "ImageSets", "Main", "%s.txt" % self.image_set)
        if not os.path.isfile(path):
            raise FileNotFoundError("VOC split file {} not found".format(os.path.abspath(path)))
        with open(path) as f:
            ids = [line.strip() for line in f if line.strip()]
        if not ids:
            raise ValueError("VOC split file {} lists no images".format(path))
        return ids

    def _parse(self, img_id):
        """dict(width, height, boxes [N, 4], labels [N], difficult [N]) of one xml, or None (reported)."""
        path = self._annopath % img_id
        try:
            root = ET.parse(path).getroot()
            width, height = int(_text(root.find("size"), "width")), int(_text(root.find("size"), "height"))
        except (OSError, ET.ParseError, AttributeError, TypeError, ValueError) as e:
            self._skips.skip("bad_annotation_file", "cannot read %s (%s); image left out", path, e)
            return None
        boxes, labels, difficult = [], [], []
        for k, obj in enumerate(root.iter("object")):
            is_difficult = _text(obj, "difficult", "0") == "1"
            if is_difficult and not self.keep_difficult:
                continue
            parsed = self._parse_object(obj, width, height, "{} object {}".format(path, k))
            if parsed is not None:
                boxes.append(parsed[0])
                labels.append(parsed[1])
                difficult.append(is_difficult)
        return dict(width=width, height=height, boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                    labels=np.asarray(labels, np.int64), difficult=np.asarray(difficult, bool))

    def _parse_object(self, obj, width, height, what):
        """(xyxy box, label) of one <object>, or None (reported) if it cannot be used."""
        name = (_text(obj, "name") or "").lower()
        if name not in self.class_to_ind or name == "__background__":
            self._skips.skip("unknown_category", "%s: class %r is not a VOC class", what, name)
            return None
        bndbox = obj.find("bndbox")
        try:
            # VOC corners are 1-based and inclusive; make them 0-based (as py-faster-rcnn does)
            box = [float(_text(bndbox, tag)) - 1 for tag in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            self._skips.skip("bad_box", "%s: <bndbox> is missing or not numeric", what)
            return None
        if box[2] < box[0] or box[3] < box[1]:
            self._skips.skip("empty_box", "%s: box %s has negative size", what, box)
            return None
        box = clip_box(box, width, height, self._skips, what)
        return None if box is None else (box, self.class_to_ind[name])

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
        path = self._imgpath % self.ids[index]
        img = load_rgb_image(path)
        if isinstance(img, Exception):
            if self.failures.mark(index, ImageFailures.UNREADABLE):
                logger.warning("%s: cannot read image %s (%s); using the next image instead",
                               self._skips.owner, path, img)
            return None
        target = self.get_groundtruth(index)
        if img.size != target.size:
            if self.failures.mark(index, ImageFailures.SIZE_MISMATCH):
                logger.warning("%s: image %s is %dx%d but its xml says %dx%d; boxes kept, clipped to the image",
                               self._skips.owner, path, img.size[0], img.size[1], *target.size)
            target = self._resized(target, img.size)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target, index

    @staticmethod
    def _resized(target, size):
        """``target`` re-labelled for an image of ``size`` (boxes unchanged) and clipped to it."""
        out = BoxList(target.bbox, size, "xyxy")
        for field in target.fields():
            out.add_field(field, target.get_field(field))
        return out.clip_to_image(remove_empty=True)

    def get_groundtruth(self, index):
        """BoxList xyxy of image ``index`` with "labels" (int64), "difficult" (bool); size from the xml."""
        record = self._records[index]
        size = (record["width"], record["height"])
        target = BoxList(torch.from_numpy(record["boxes"].copy()), size, mode="xyxy")
        target.add_field("labels", torch.from_numpy(record["labels"].copy()))
        target.add_field("difficult", torch.from_numpy(record["difficult"].copy()))
        return target

    def get_img_info(self, index):
        """{"height": int, "width": int} of image ``index`` (from its xml)."""
        record = self._records[index]
        return {"height": record["height"], "width": record["width"]}

    @property
    def class_names(self):
        """Names indexed by label, background first (``CLASSES``)."""
        return [name.strip() for name in self.CLASSES]

    def map_class_id_to_class_name(self, class_id):
        """Class name of contiguous label ``class_id`` (0 is the background)."""
        return self.CLASSES[class_id]
