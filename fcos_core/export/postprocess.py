"""FCOS post-processing of one image in ops that export to ONNX (no data-dependent shape before the NMS).

:class:`ExportPostProcessor` gives the detections of
:class:`~fcos_core.modeling.rpn.fcos.inference.FCOSPostProcessor` under either MODEL.FCOS.CONVENTION:

* per level, a ranking score is set to -1 (a sentinel) where the pair is not a candidate, and the
  ``min(PRE_NMS_TOP_N, H_l W_l C)`` best (location, class) pairs are taken (ONNX ``TopK``); the
  sentinels are dropped by the NMS's ``score_threshold``;
  "original": candidates have ``cls_prob > INFERENCE_TH``, ranked by ``cls_prob * ctr_prob``;
  "torchvision": candidates have ``sqrt(cls_prob * ctr_prob) > INFERENCE_TH``, ranked by it;
* locations: "original" at ``(j s + s // 2, i s + s // 2)`` with the FPN stride ``s``;
  "torchvision" at torchvision's anchor centres ``(j (W_pad // W_l), i (H_pad // H_l))``, the
  padded size's strides computed in the graph, so they follow a dynamic input size;
* boxes clipped to ``[0, W - 1] x [0, H - 1]`` ("original", pixel-inclusive) or ``[0, W] x [0, H]``
  ("torchvision");
* class-aware NMS is ONNX ``NonMaxSuppression`` with one score row per class. Its IoU is the
  continuous one (widths ``x2 - x1``), which is torchvision's. The original's ``ml_nms`` measures
  widths as ``x2 - x1 + 1``: for it the boxes given to the NMS are widened by one pixel on x2 and
  y2, which makes the plain IoU of the widened boxes equal to the legacy IoU of the boxes
  (intersection ``min(x2 + 1) - max(x1) = min(x2) - max(x1) + 1``, areas likewise; only the float32
  rounding of the ``+ 1`` can differ); the boxes returned are not widened;
* then the DETECTIONS_PER_IMG best: every detection tied with the last one too ("original"), or
  exactly that many ("torchvision").
"""
import torch
from torch import nn

from fcos_core.layers import ml_nms
from fcos_core.modeling.rpn.fcos.inference import decode_boxes
from fcos_core.modeling.rpn.fcos.conventions import CONVENTIONS, check_convention
from fcos_core.modeling.rpn.fcos.target_assignment import compute_locations_per_level, torchvision_locations_per_level

__all__ = ["ExportPostProcessor", "make_export_postprocessor", "class_nms", "per_class_nms", "legacy_class_nms",
           "CONVENTIONS"]

_SENTINEL = -1.0  # ranking score of a (location, class) pair that is not a candidate


class _ClassNMS(torch.autograd.Function):
    """Class-aware NMS that exports as ONNX ``NonMaxSuppression`` with a class dimension.

    forward(boxes [N, 4] xyxy, scores [C, N], iou_threshold, score_threshold) -> kept box indices
    [K] int64. A box takes part in class ``c`` where ``scores[c] > score_threshold``; IoU is the
    plain (continuous) one, suppression when IoU > iou_threshold.
    """

    @staticmethod
    def forward(ctx, boxes, scores, iou_threshold, score_threshold):
        cls_idx, box_idx = (scores > score_threshold).nonzero(as_tuple=True)
        keep = ml_nms(boxes[box_idx], scores[cls_idx, box_idx], cls_idx, iou_threshold, legacy=False)
        return box_idx[keep]

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold, score_threshold):
        boxes = g.op("Unsqueeze", boxes, g.op("Constant", value_t=torch.tensor([0])))
        scores = g.op("Unsqueeze", scores, g.op("Constant", value_t=torch.tensor([0])))
        # NonMaxSuppression keeps at most this many boxes per class: all of them
        max_out = g.op("Constant", value_t=torch.tensor([2 ** 31 - 1], dtype=torch.int64))
        iou = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32))
        score = g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32))
        selected = g.op("NonMaxSuppression", boxes, scores, max_out, iou, score)  # [K, 3] (batch, class, box)
        index = g.op("Gather", selected, g.op("Constant", value_t=torch.tensor(2)), axis_i=1)
        return index


def class_nms(boxes, scores, iou_threshold, score_threshold):
    """Class-aware plain-IoU NMS, ONNX-exportable. See :class:`_ClassNMS`."""
    return _ClassNMS.apply(boxes, scores, float(iou_threshold), float(score_threshold))


def per_class_nms(boxes, scores, labels, num_classes, iou_threshold, legacy):
    """Class-aware NMS as ONNX ``NonMaxSuppression``, with the legacy or the continuous IoU.

    Args:
        boxes (Tensor[N, 4]): ``xyxy`` pixels.
        scores (Tensor[N]): boxes with a score <= 0 are dropped (the candidates' sentinel).
        labels (Tensor[N]): int64 in 1..num_classes.
        legacy: widths ``x2 - x1 + 1`` in the IoU (``ml_nms(legacy=True)``), else ``x2 - x1``.

    Returns:
        Tensor[K] int64: kept indices into ``boxes``, grouped by class (not sorted by score).
    """
    classes = torch.arange(1, num_classes + 1, device=labels.device)
    per_class = torch.where(labels[None, :] == classes[:, None], scores[None, :],
                            torch.full_like(scores, _SENTINEL)[None, :])
    if legacy:  # plain IoU of boxes one pixel wider on x2 and y2 == legacy IoU of the boxes
        boxes = torch.cat((boxes[:, :2], boxes[:, 2:] + 1), dim=1)
    return class_nms(boxes, per_class, iou_threshold, 0.0)


def legacy_class_nms(boxes, scores, labels, num_classes, iou_threshold):
    """:func:`per_class_nms` with the legacy ``x2 - x1 + 1`` IoU of the original's ``ml_nms``."""
    return per_class_nms(boxes, scores, labels, num_classes, iou_threshold, legacy=True)


def topk_size(n, k):
    """``min(k, n)`` for a dimension ``n`` that is an int, or a traced 0-dim tensor when exporting."""
    if isinstance(n, torch.Tensor):
        return torch.clamp(n, max=k)
    return min(n, k)


class ExportPostProcessor(nn.Module):
    """Head outputs of one image to its detections, in exportable ops (see the module docstring).

    Args:
        fpn_strides (list[int]): per level, pixels (MODEL.FCOS.FPN_STRIDES; the "original" locations).
        pre_nms_thresh: candidate threshold (MODEL.FCOS.INFERENCE_TH).
        pre_nms_top_n: candidates kept per level (MODEL.FCOS.PRE_NMS_TOP_N).
        nms_thresh: IoU threshold of the class-aware NMS (MODEL.FCOS.NMS_TH; <= 0: no NMS).
        detections_per_img: detections kept (TEST.DETECTIONS_PER_IMG; <= 0: all).
        num_classes: MODEL.FCOS.NUM_CLASSES (background included).
        convention: "original" or "torchvision" (MODEL.FCOS.CONVENTION): locations, candidate
            threshold and ranking, clipping, NMS IoU and the top-n cut, as the module docstring says.
        min_size: boxes narrower or lower than this (pixels) are dropped (0: none).

    forward(box_cls, box_reg, centerness, image_size, padded_size) -> (boxes [K, 4] ``xyxy`` in
    pixels of the unpadded input, scores [K] float32 ``sqrt(cls_prob * ctr_prob)``, labels [K]
    int64 in 1..C), highest score first. ``box_cls`` etc.: per level [1, C | 4 | 1, H_l, W_l];
    ``image_size`` / ``padded_size``: (H, W) of the input before / after padding (ints or traced).
    """

    def __init__(self, fpn_strides, pre_nms_thresh, pre_nms_top_n, nms_thresh, detections_per_img, num_classes,
                 convention="original", min_size=0):
        super().__init__()
        check_convention(convention)
        self.fpn_strides = list(fpn_strides)
        self.pre_nms_thresh = pre_nms_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.num_classes = num_classes
        self.convention = convention
        self.min_size = min_size

    @property
    def legacy(self):
        """True for the original's pixel-inclusive boxes and rules, False for torchvision's."""
        return self.convention == "original"

    def forward(self, box_cls, box_reg, centerness, image_size, padded_size):
        per_level = [
            self._candidates(cls[0], reg[0], ctr[0], level, image_size, padded_size)
            for level, (cls, reg, ctr) in enumerate(zip(box_cls, box_reg, centerness))
        ]
        boxes, scores, labels = (torch.cat(parts) for parts in zip(*per_level))
        return self._nms_and_top(boxes, scores, labels)

    def _locations(self, level, fh, fw, padded_size, device):
        """[fh * fw, 2] ``(x, y)`` of one level's cells, in pixels."""
        if self.legacy:
            return compute_locations_per_level(fh, fw, self.fpn_strides[level], device=device)
        return torchvision_locations_per_level(fh, fw, padded_size, device=device)

    def _rank(self, cls, ctr):
        """Ranking scores [H_l W_l C] of a level (-1 for non-candidates) from logits [C, H_l, W_l], [1, H_l, W_l]."""
        cls_prob = cls.permute(1, 2, 0).reshape(-1, cls.shape[0]).sigmoid()
        ctr_prob = ctr.reshape(-1).sigmoid()
        rank = cls_prob * ctr_prob[:, None]
        if self.legacy:
            passed = cls_prob > self.pre_nms_thresh
        else:  # torchvision: sqrt(cls * ctr) is both the threshold's score and the ranking
            rank = rank.sqrt()
            passed = rank > self.pre_nms_thresh
        return torch.where(passed, rank, torch.full_like(rank, _SENTINEL)).reshape(-1)

    def _candidates(self, cls, reg, ctr, level, image_size, padded_size):
        """Best ``pre_nms_top_n`` (location, class) pairs of one level: boxes [k, 4], scores [k]
        (``sqrt(cls_prob * ctr_prob)``, -1 for non-candidates), labels [k]."""
        num_classes, fh, fw = cls.shape
        rank, flat = self._rank(cls, ctr).topk(topk_size(fh * fw * num_classes, self.pre_nms_top_n))
        loc_idx = torch.div(flat, num_classes, rounding_mode="floor")
        distances = reg.permute(1, 2, 0).reshape(-1, 4)[loc_idx]
        locations = self._locations(level, fh, fw, padded_size, cls.device)
        boxes = self._clip(decode_boxes(locations[loc_idx], distances), image_size)
        valid = rank > _SENTINEL
        if self.min_size > 0:  # remove_small_boxes (widths x2 - x1 + 1 for legacy boxes)
            inclusive = 1 if self.legacy else 0
            valid = (valid & (boxes[:, 2] - boxes[:, 0] + inclusive >= self.min_size)
                     & (boxes[:, 3] - boxes[:, 1] + inclusive >= self.min_size))
        score = rank.clamp(min=0).sqrt() if self.legacy else rank
        scores = torch.where(valid, score, torch.full_like(rank, _SENTINEL))
        return boxes, scores, flat % num_classes + 1

    def _clip(self, boxes, image_size):
        """``xyxy`` boxes [k, 4] clamped to ``[0, W - 1] x [0, H - 1]`` (legacy) or ``[0, W] x [0, H]``."""
        inclusive = 1 if self.legacy else 0
        max_x, max_y = image_size[1] - inclusive, image_size[0] - inclusive
        x1, y1, x2, y2 = boxes.clamp(min=0).unbind(1)
        return torch.stack((x1.clamp(max=max_x), y1.clamp(max=max_y), x2.clamp(max=max_x), y2.clamp(max=max_y)),
                           dim=1)

    def _nms_and_top(self, boxes, scores, labels):
        """Class-aware NMS, then the ``detections_per_img`` best (ties kept for the original)."""
        if self.nms_thresh > 0:
            keep = per_class_nms(boxes, scores, labels, self.num_classes - 1, self.nms_thresh, legacy=self.legacy)
        else:  # no NMS, as FCOSPostProcessor: every candidate (the sentinels have score -1)
            keep = (scores > 0).nonzero()[:, 0]
        n = self.detections_per_img
        if n > 0 and not self.legacy:  # torchvision: exactly the n best
            kept_scores, order = scores[keep].topk(topk_size(keep.shape[0], n))
            keep = keep[order]
        else:
            kept_scores, order = scores[keep].topk(keep.shape[0])
            keep = keep[order]
            if n > 0:
                # the n-th best score (the last one when fewer): keep every score >= it, as kthvalue does;
                # kept scores are > 0, so the sentinel appended for an empty list keeps nothing
                padded = torch.cat((kept_scores, kept_scores.new_full((1,), _SENTINEL)))
                keep = keep[kept_scores >= padded[topk_size(keep.shape[0], n) - 1]]
        return boxes[keep], scores[keep], labels[keep]


def make_export_postprocessor(cfg):
    """:class:`ExportPostProcessor` from MODEL.FCOS.* (FPN_STRIDES, INFERENCE_TH, PRE_NMS_TOP_N, NMS_TH,
    NUM_CLASSES, CONVENTION) and TEST.DETECTIONS_PER_IMG: the values ``make_fcos_postprocessor``
    gives the PyTorch model."""
    fcos = cfg.MODEL.FCOS
    return ExportPostProcessor(
        fpn_strides=fcos.FPN_STRIDES,
        pre_nms_thresh=fcos.INFERENCE_TH,
        pre_nms_top_n=fcos.PRE_NMS_TOP_N,
        nms_thresh=fcos.NMS_TH,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMG,
        num_classes=fcos.NUM_CLASSES,
        convention=fcos.CONVENTION,
    )
