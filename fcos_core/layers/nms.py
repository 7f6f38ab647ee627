"""Greedy non-maximum suppression: single-class ``nms`` and class-aware ``ml_nms``.

Both run the compiled ``fcos_core._C`` kernels (csrc/nms, csrc/ml_nms) when they exist for the
tensor's device and otherwise the pure-PyTorch references below, which define the exact result the
kernels must reproduce.

Conventions shared by every function here:

* boxes are ``[N, 4]`` in ``xyxy`` pixels (x1, y1, x2, y2); scores are ``[N]``;
* candidates are visited in decreasing score order, equal scores by increasing index (a stable
  descending sort), and the kept indices (int64) are returned in that order;
* a box is suppressed when its IoU with an already kept box is strictly greater than the threshold
  (like ``torchvision.ops.nms``);
* ``legacy=True`` measures widths and heights as ``x2 - x1 + 1`` like the original FCOS /
  maskrcnn-benchmark kernels (the released checkpoints were evaluated with it); ``legacy=False`` is
  the continuous convention ``x2 - x1`` of torchvision;
* IoUs are computed in the boxes' dtype (float32 for float16/bfloat16 boxes), and compared with the
  threshold exactly (in float64).
"""
import torch

from fcos_core.layers import _extension

__all__ = ["nms", "ml_nms", "nms_reference", "ml_nms_reference"]


def _compute_dtype(boxes):
    return boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32


def _check_inputs(boxes, scores, labels=None):
    if boxes.dim() != 2 or boxes.size(1) != 4:
        raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"boxes must be a floating-point tensor, got {boxes.dtype}")
    if scores.dim() != 1 or scores.size(0) != boxes.size(0):
        raise ValueError(f"scores must have shape [N] = [{boxes.size(0)}], got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if labels is not None and (labels.dim() != 1 or labels.size(0) != boxes.size(0)):
        raise ValueError(f"labels must have shape [N] = [{boxes.size(0)}], got {tuple(labels.shape)}")
    devices = {boxes.device, scores.device} | ({labels.device} if labels is not None else set())
    if len(devices) != 1:
        raise ValueError(f"boxes, scores (and labels) must be on one device, got {sorted(map(str, devices))}")


def _greedy(boxes, scores, labels, iou_threshold, legacy):
    """Greedy NMS shared by the references; ``labels`` None means a single class."""
    n = boxes.size(0)
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].to(_compute_dtype(boxes))
    lab = labels[order] if labels is not None else None
    offset = 1.0 if legacy else 0.0
    x1, y1, x2, y2 = b.unbind(1)
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(n):  # sorted position i; a kept box suppresses later boxes only
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, n)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + offset).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + offset).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        over = iou.double() > iou_threshold
        if lab is not None:
            over &= lab[rest] == lab[i]
        suppressed[rest] |= over
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def nms_reference(boxes, scores, iou_threshold, legacy=True):
    """Pure-PyTorch greedy NMS: the definition the compiled ``nms`` kernels reproduce exactly.

    Args:
        boxes (Tensor[N, 4]): ``xyxy`` boxes in pixels, any floating dtype.
        scores (Tensor[N]): floating scores.
        iou_threshold (float): a box is suppressed when IoU > iou_threshold with a kept box.
        legacy (bool): ``True`` uses widths ``x2 - x1 + 1`` (original FCOS / maskrcnn-benchmark),
            ``False`` the continuous ``x2 - x1`` of ``torchvision.ops.nms``.

    Returns:
        Tensor[K] int64: kept indices in decreasing score order (equal scores: lower index first).

    Greedy NMS as used by FCOS (Tian et al. 2019, Sec. 3.1, "Inference") and the maskrcnn-benchmark
    kernels it inherits.
    """
    _check_inputs(boxes, scores)
    return _greedy(boxes, scores, None, iou_threshold, legacy)


def ml_nms_reference(boxes, scores, labels, iou_threshold, legacy=True):
    """Pure-PyTorch class-aware greedy NMS, the definition of the ``ml_nms`` kernels.

    Exactly :func:`nms_reference`, except that boxes with different ``labels`` never suppress each
    other.

    Args:
        boxes (Tensor[N, 4]): ``xyxy`` boxes in pixels.
        scores (Tensor[N]): floating scores.
        labels (Tensor[N]): class of each box, an integer or floating tensor (compared for equality).
        iou_threshold (float): suppression when IoU > iou_threshold within a class.
        legacy (bool): ``x2 - x1 + 1`` widths (original FCOS) or continuous ones (torchvision).

    Returns:
        Tensor[K] int64: kept indices, all classes merged, in decreasing score order (equal scores:
        lower index first).
    """
    _check_inputs(boxes, scores, labels)
    return _greedy(boxes, scores, labels, iou_threshold, legacy)


def nms(boxes, scores, nms_thresh, legacy=True):
    """Greedy NMS (the original ``fcos_core.layers.nms`` signature) on CPU or CUDA.

    Args:
        boxes (Tensor[N, 4]): ``xyxy`` boxes in pixels; may be non-contiguous.
        scores (Tensor[N]): floating scores.
        nms_thresh (float): a box is suppressed when IoU > nms_thresh with a kept box.
        legacy (bool): ``True`` (default, as the original FCOS) measures widths as ``x2 - x1 + 1``;
            ``False`` follows ``torchvision.ops.nms``.

    Returns:
        Tensor[K] int64 on the boxes' device: kept indices in decreasing score order, equal scores
        lower index first. Same result as :func:`nms_reference`.
    """
    _check_inputs(boxes, scores)
    if boxes.size(0) == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if _extension.has_kernel("nms", boxes.device.type):
        return _extension.op("nms")(boxes, scores, float(nms_thresh), bool(legacy))
    _extension.warn_fallback("nms", boxes.device.type)
    return _greedy(boxes, scores, None, float(nms_thresh), legacy)


def ml_nms(boxes, scores, labels, nms_thresh, legacy=True):
    """Class-aware NMS in one call (the original ``fcos_core.layers.ml_nms`` signature).

    Boxes of different ``labels`` never suppress each other; used by FCOS post-processing over all
    levels of an image (NMS_TH 0.6, legacy +1 IoU).

    Args:
        boxes (Tensor[N, 4]): ``xyxy`` boxes in pixels.
        scores (Tensor[N]): floating scores.
        labels (Tensor[N]): integer or floating class labels.
        nms_thresh (float): suppression when IoU > nms_thresh within a class.
        legacy (bool): ``x2 - x1 + 1`` widths (default, original FCOS) or continuous (torchvision).

    Returns:
        Tensor[K] int64: kept indices in decreasing score order (ties: lower index first), equal to
        :func:`ml_nms_reference`.
    """
    _check_inputs(boxes, scores, labels)
    if boxes.size(0) == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if _extension.has_kernel("ml_nms", boxes.device.type):
        return _extension.op("ml_nms")(boxes, scores, labels, float(nms_thresh), bool(legacy))
    _extension.warn_fallback("ml_nms", boxes.device.type)
    return _greedy(boxes, scores, labels, float(nms_thresh), legacy)
