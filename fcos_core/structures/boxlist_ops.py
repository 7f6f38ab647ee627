"""Operations on BoxLists: NMS, filtering, pairwise IoU, concatenation.

Boxes use the legacy pixel-inclusive convention of the original FCOS / maskrcnn-benchmark: a box
(x1, y1, x2, y2) is x2 - x1 + 1 pixels wide. Every function returns a new BoxList that owns its
tensors (see :mod:`fcos_core.structures.bounding_box`).
"""
import torch

from fcos_core.layers.nms import ml_nms as _box_ml_nms
from fcos_core.layers.nms import nms as _box_nms

from .bounding_box import TO_REMOVE, BoxList


def _copy(boxlist):
    return boxlist.copy_with_fields(boxlist.fields())


def boxlist_nms(boxlist, nms_thresh, max_proposals=-1, score_field="scores", legacy=True):
    """Greedy non-maximum suppression over all boxes of ``boxlist`` (one class).

    Arguments:
        boxlist (BoxList): N boxes with a [N] float field ``score_field``.
        nms_thresh (float): a box is dropped when its IoU with a kept box is > nms_thresh;
            <= 0 keeps every box.
        max_proposals (int): if > 0, only the max_proposals best boxes are kept after NMS.
        score_field (str): name of the scores field.
        legacy (bool): IoU with widths x2 - x1 + 1 (True, the original) or x2 - x1.

    Returns:
        BoxList in ``boxlist``'s mode with the kept boxes in decreasing score order.
    """
    if nms_thresh <= 0:
        return _copy(boxlist)
    xyxy = boxlist.convert("xyxy")
    keep = _box_nms(xyxy.bbox, xyxy.get_field(score_field), nms_thresh, legacy=legacy)
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return xyxy[keep].convert(boxlist.mode)


def boxlist_ml_nms(boxlist, nms_thresh, max_proposals=-1, score_field="scores", label_field="labels",
                   legacy=True):
    """Class-aware NMS: as :func:`boxlist_nms` but boxes of different ``label_field`` values never
    suppress each other (FCOS post-processing, NMS_TH 0.6).

    Returns:
        BoxList in ``boxlist``'s mode with the kept boxes, all classes merged, in decreasing score order.
    """
    if nms_thresh <= 0:
        return _copy(boxlist)
    xyxy = boxlist.convert("xyxy")
    keep = _box_ml_nms(
        xyxy.bbox, xyxy.get_field(score_field), xyxy.get_field(label_field), nms_thresh, legacy=legacy
    )
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return xyxy[keep].convert(boxlist.mode)


def remove_small_boxes(boxlist, min_size):
    """Keep the boxes whose width and height (x2 - x1 + 1, y2 - y1 + 1) are both >= ``min_size`` pixels."""
    _, _, ws, hs = boxlist.convert("xywh").bbox.unbind(dim=1)
    keep = ((ws >= min_size) & (hs >= min_size)).nonzero().squeeze(1)
    return boxlist[keep]


def box_iou_legacy(boxes1, boxes2):
    """Pairwise IoU of pixel-inclusive boxes.

    Arguments:
        boxes1 (Tensor[N, 4]): xyxy boxes; width = x2 - x1 + 1.
        boxes2 (Tensor[M, 4]): xyxy boxes.

    Returns:
        Tensor[N, M]: IoU of every pair, intersection width = min(x2) - max(x1) + 1 clamped at 0.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0] + TO_REMOVE) * (boxes1[:, 3] - boxes1[:, 1] + TO_REMOVE)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + TO_REMOVE) * (boxes2[:, 3] - boxes2[:, 1] + TO_REMOVE)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])  # [N, M, 2]
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])  # [N, M, 2]
    wh = (rb - lt + TO_REMOVE).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def boxlist_iou(boxlist1, boxlist2):
    """Tensor[N, M]: IoU (legacy +1) between the N boxes of ``boxlist1`` and the M of ``boxlist2``.

    Both must refer to the same image size (RuntimeError otherwise); any mode.
    """
    if tuple(boxlist1.size) != tuple(boxlist2.size):
        raise RuntimeError("boxlists should have same image size, got {}, {}".format(boxlist1, boxlist2))
    return box_iou_legacy(boxlist1._xyxy(), boxlist2._xyxy())


def cat_boxlist(bboxes):
    """Concatenate BoxLists of one image (same size, mode and field names) into a new BoxList."""
    if not isinstance(bboxes, (list, tuple)) or len(bboxes) == 0:
        raise ValueError("cat_boxlist expects a non-empty list of BoxList")
    if not all(isinstance(bbox, BoxList) for bbox in bboxes):
        raise TypeError("cat_boxlist expects BoxList elements")
    size, mode = bboxes[0].size, bboxes[0].mode
    fields = set(bboxes[0].fields())
    for bbox in bboxes[1:]:
        if tuple(bbox.size) != tuple(size) or bbox.mode != mode or set(bbox.fields()) != fields:
            raise ValueError("cat_boxlist: {} does not match {} (size, mode or fields {})".format(
                bbox, bboxes[0], sorted(fields)))
    cat_boxes = BoxList(torch.cat([bbox.bbox for bbox in bboxes], dim=0), size, mode)
    for field in bboxes[0].fields():
        cat_boxes.add_field(field, torch.cat([bbox.get_field(field) for bbox in bboxes], dim=0))
    return cat_boxes
