"""BoxList: the boxes of one image, with the image size and per-box fields (labels, scores, ...).

The public API is the one of maskrcnn-benchmark's ``BoxList`` so that code written for it (and for
the original FCOS) keeps working, including its pixel conventions ("legacy", TO_REMOVE = 1): a box
``(x1, y1, x2, y2)`` covers the pixels x1..x2 inclusive, so its width is ``x2 - x1 + 1``.

Ownership (differs from the original, on purpose): no method changes a tensor in place, and every
method that returns a BoxList returns a new one that owns its box tensor and its tensor fields, so
changing the result, in place or with ``add_field``, never changes the BoxList it came from. The
original ``clip_to_image`` clamped ``self.bbox`` in place (and with it every BoxList sharing that
tensor); here it returns a clipped copy. Fields that are neither tensors nor BoxLists (e.g. masks)
are passed on by reference, or through their own ``resize``/``transpose``/``crop``/``to``.
"""
import torch

# transpose methods, same values as PIL.Image.FLIP_LEFT_RIGHT / FLIP_TOP_BOTTOM
FLIP_LEFT_RIGHT = 0
FLIP_TOP_BOTTOM = 1

_MODES = ("xyxy", "xywh")
# pixel-inclusive boxes: width = x2 - x1 + TO_REMOVE
TO_REMOVE = 1


def xyxy_to_xywh(boxes):
    """Boxes [N, 4] (x1, y1, x2, y2), pixels inclusive -> [N, 4] (x1, y1, w, h) with w = x2 - x1 + 1."""
    x1, y1, x2, y2 = boxes.unbind(dim=-1)
    return torch.stack((x1, y1, x2 - x1 + TO_REMOVE, y2 - y1 + TO_REMOVE), dim=-1)


def xywh_to_xyxy(boxes):
    """Boxes [N, 4] (x1, y1, w, h) -> [N, 4] (x1, y1, x2, y2) with x2 = x1 + max(w - 1, 0)."""
    x1, y1, w, h = boxes.unbind(dim=-1)
    x2 = x1 + (w - TO_REMOVE).clamp(min=0)
    y2 = y1 + (h - TO_REMOVE).clamp(min=0)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def _check_mode(mode):
    if mode not in _MODES:
        raise ValueError("mode should be 'xyxy' or 'xywh', got {!r}".format(mode))


def _shares_memory(a, b):
    """Whether tensor ``a`` may view the memory of tensor ``b``."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _owned(value):
    """A copy of a field value that shares no tensor memory with ``value``."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, BoxList):
        return value.copy_with_fields(value.fields())
    return value


class BoxList(object):
    """The boxes of one image.

    Arguments:
        bbox (Tensor[N, 4] or nested list): boxes in pixels, stored as float32 on bbox's device.
        image_size (tuple[int, int]): (width, height) of the image the boxes refer to.
        mode (str): "xyxy" (x1, y1, x2, y2; corners inclusive) or "xywh" (x1, y1, w, h).

    Attributes: ``bbox`` (Tensor[N, 4]), ``size`` ((width, height) tuple), ``mode``,
    ``extra_fields`` (dict of per-box data whose first dimension is N).
    """

    def __init__(self, bbox, image_size, mode="xyxy"):
        device = bbox.device if isinstance(bbox, torch.Tensor) else torch.device("cpu")
        bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        if bbox.ndimension() != 2:
            raise ValueError("bbox should have 2 dimensions, got {}".format(bbox.ndimension()))
        if bbox.size(-1) != 4:
            raise ValueError("last dimension of bbox should have a size of 4, got {}".format(bbox.size(-1)))
        _check_mode(mode)
        self.bbox = bbox
        self.size = tuple(image_size)  # (image_width, image_height)
        self.mode = mode
        self.extra_fields = {}

    @classmethod
    def _build(cls, bbox, image_size, mode, fields):
        """A BoxList around ``bbox`` and the dict ``fields``, both taken as they are (owned by the caller)."""
        out = cls(bbox, image_size, mode)
        out.extra_fields = fields
        return out

    # ---------------------------------------------------------------- fields
    def add_field(self, field, field_data):
        """Store ``field_data`` (first dimension N) under the name ``field``; replaces an existing one."""
        self.extra_fields[field] = field_data

    def get_field(self, field):
        """The data stored under ``field`` (KeyError if missing)."""
        return self.extra_fields[field]

    def has_field(self, field):
        """Whether a field named ``field`` exists."""
        return field in self.extra_fields

    def fields(self):
        """The field names, as a list."""
        return list(self.extra_fields.keys())

    def _copy_extra_fields(self, bbox):
        """Copy (clone) every field of BoxList ``bbox`` into this one."""
        for k, v in bbox.extra_fields.items():
            self.extra_fields[k] = _owned(v)

    def copy_with_fields(self, fields, skip_missing=False):
        """A copy of the boxes with only the named fields (a name or a list of names).

        A missing field raises KeyError unless ``skip_missing``. The copy owns its tensors.
        """
        if not isinstance(fields, (list, tuple)):
            fields = [fields]
        kept = {}
        for field in fields:
            if self.has_field(field):
                kept[field] = _owned(self.get_field(field))
            elif not skip_missing:
                raise KeyError("Field '{}' not found in {}".format(field, self))
        return self._build(self.bbox.clone(), self.size, self.mode, kept)

    # ---------------------------------------------------------------- modes
    def _split_into_xyxy(self):
        """The boxes as four [N, 1] tensors x1, y1, x2, y2 (views of ``bbox`` in xyxy mode)."""
        if self.mode == "xyxy":
            return self.bbox.split(1, dim=-1)
        return xywh_to_xyxy(self.bbox).split(1, dim=-1)

    def _xyxy(self):
        """The boxes as [N, 4] x1, y1, x2, y2 (``bbox`` itself in xyxy mode: do not modify)."""
        return self.bbox if self.mode == "xyxy" else xywh_to_xyxy(self.bbox)

    def _from_xyxy(self, boxes, image_size, fields):
        """A new BoxList in this BoxList's mode from xyxy ``boxes`` [N, 4] and an owned ``fields`` dict."""
        if self.mode == "xywh":
            boxes = xyxy_to_xywh(boxes)
        return self._build(boxes, image_size, self.mode, fields)

    def convert(self, mode):
        """A copy in ``mode`` ("xyxy" or "xywh"); a copy too when the mode is already ``mode``."""
        _check_mode(mode)
        if mode == self.mode:
            bbox = self.bbox.clone()
        elif mode == "xyxy":
            bbox = xywh_to_xyxy(self.bbox)
        else:
            bbox = xyxy_to_xywh(self.bbox)
        fields = {k: _owned(v) for k, v in self.extra_fields.items()}
        return self._build(bbox, self.size, mode, fields)

    # ---------------------------------------------------------------- geometry
    def resize(self, size, *args, **kwargs):
        """A copy for the image resized to ``size`` = (width, height).

        Box coordinates are multiplied by new/old per axis (x by width ratio, y by height ratio).
        Non-tensor fields (e.g. masks, keypoints) are resized through their own ``resize``.
        """
        ratio_w, ratio_h = (float(s) / float(s_orig) for s, s_orig in zip(size, self.size))
        if ratio_w == ratio_h:
            # xywh scales the same way as xyxy when both ratios agree
            return self._transformed(self.bbox * ratio_w, self.mode, size, "resize", size, *args, **kwargs)
        scale = self.bbox.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h])
        boxes = self._xyxy() * scale
        return self._transformed(boxes, "xyxy", size, "resize", size, *args, **kwargs)

    def _transformed(self, boxes, boxes_mode, image_size, method, *args, **kwargs):
        """A new BoxList in self.mode from ``boxes`` (in ``boxes_mode``), non-tensor fields via ``method``."""
        fields = {}
        for k, v in self.extra_fields.items():
            fields[k] = v.clone() if isinstance(v, torch.Tensor) else getattr(v, method)(*args, **kwargs)
        if boxes_mode == self.mode:
            return self._build(boxes, tuple(image_size), self.mode, fields)
        return self._from_xyxy(boxes, tuple(image_size), fields)

    def transpose(self, method):
        """A copy flipped with ``method``: FLIP_LEFT_RIGHT (0) or FLIP_TOP_BOTTOM (1).

        As in the original: left-right x' = W - x - 1 (pixel-inclusive), top-bottom y' = H - y (no -1).
        Either flip applied twice gives the boxes back.
        """
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise NotImplementedError("Only FLIP_LEFT_RIGHT and FLIP_TOP_BOTTOM implemented")
        image_width, image_height = self.size
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        if method == FLIP_LEFT_RIGHT:
            boxes = (image_width - xmax - TO_REMOVE, ymin, image_width - xmin - TO_REMOVE, ymax)
        else:
            boxes = (xmin, image_height - ymax, xmax, image_height - ymin)
        return self._transformed(torch.cat(boxes, dim=-1), "xyxy", self.size, "transpose", method)

    def crop(self, box):
        """A copy for the crop ``box`` = (left, upper, right, lower) of the image.

        The new image size is (right - left, lower - upper). Coordinates are shifted by (left, upper)
        and clamped to [0, width] x [0, height]; boxes left empty are kept (as in the original).
        """
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        w, h = box[2] - box[0], box[3] - box[1]
        cropped = torch.cat(
            (
                (xmin - box[0]).clamp(min=0, max=w),
                (ymin - box[1]).clamp(min=0, max=h),
                (xmax - box[0]).clamp(min=0, max=w),
                (ymax - box[1]).clamp(min=0, max=h),
            ),
            dim=-1,
        )
        return self._transformed(cropped, "xyxy", (w, h), "crop", box)

    def clip_to_image(self, remove_empty=True):
        """A copy with the boxes clamped to [0, W - 1] x [0, H - 1] (pixel-inclusive, as the original).

        With ``remove_empty`` the boxes with x2 <= x1 or y2 <= y1 after clipping are dropped.
        Unlike the original this does not modify ``self.bbox``.
        """
        max_x, max_y = self.size[0] - TO_REMOVE, self.size[1] - TO_REMOVE
        x1, y1, x2, y2 = self._xyxy().unbind(dim=-1)
        x1, x2 = x1.clamp(min=0, max=max_x), x2.clamp(min=0, max=max_x)
        y1, y2 = y1.clamp(min=0, max=max_y), y2.clamp(min=0, max=max_y)
        clipped = torch.stack((x1, y1, x2, y2), dim=-1)
        if not remove_empty:
            return self._from_xyxy(clipped, self.size, {k: _owned(v) for k, v in self.extra_fields.items()})
        keep = (y2 > y1) & (x2 > x1)
        fields = {k: v[keep] for k, v in self.extra_fields.items()}
        return self._from_xyxy(clipped[keep], self.size, fields)

    def area(self):
        """Tensor[N]: box areas in pixels, (x2 - x1 + 1) * (y2 - y1 + 1) for xyxy, w * h for xywh."""
        box = self.bbox
        if self.mode == "xyxy":
            return (box[:, 2] - box[:, 0] + TO_REMOVE) * (box[:, 3] - box[:, 1] + TO_REMOVE)
        return box[:, 2] * box[:, 3]

    # ---------------------------------------------------------------- tensor-like
    def to(self, device):
        """A copy on ``device`` (fields with a ``to`` method moved too)."""
        bbox = self.bbox.to(device)
        if _shares_memory(bbox, self.bbox):
            bbox = bbox.clone()
        fields = {}
        for k, v in self.extra_fields.items():
            if isinstance(v, torch.Tensor):
                moved = v.to(device)
                fields[k] = moved.clone() if _shares_memory(moved, v) else moved
            elif hasattr(v, "to"):
                fields[k] = v.to(device)
            else:
                fields[k] = v
        return self._build(bbox, self.size, self.mode, fields)

    def __getitem__(self, item):
        """The boxes selected by ``item`` (slice, index list/tensor or bool mask), fields selected alike."""
        bbox = self.bbox[item]
        if _shares_memory(bbox, self.bbox):
            bbox = bbox.clone()
        fields = {}
        for k, v in self.extra_fields.items():
            selected = v[item]
            if isinstance(v, torch.Tensor) and _shares_memory(selected, v):
                selected = selected.clone()
            fields[k] = selected
        return self._build(bbox, self.size, self.mode, fields)

    def __len__(self):
        return self.bbox.shape[0]

    def __repr__(self):
        return "{}(num_boxes={}, image_width={}, image_height={}, mode={})".format(
            self.__class__.__name__, len(self), self.size[0], self.size[1], self.mode
        )
