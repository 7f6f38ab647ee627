"""The whole FCOS detector as one ONNX graph: backbone, head, box decoding and class-aware NMS.

Graph contract (``tools/export_onnx.py`` writes it, ``tests/export/test_onnx_export.py`` checks it):

* input ``image``: float32 ``[1, 3, H, W]``, any H and W: the image after the test transforms
  (resized, then ``Normalize``: BGR 0-255 minus PIXEL_MEAN for the original configs), *not*
  padded; the graph pads it with zeros to a multiple of DATALOADER.SIZE_DIVISIBILITY as
  ``to_image_list`` does;
* outputs, with post-processing: ``boxes`` float32 ``[K, 4]`` ``xyxy`` in pixels of the input
  tensor, clipped to ``[0, W - 1] x [0, H - 1]``; ``scores`` float32 ``[K]``
  (``sqrt(sigmoid(cls) * sigmoid(centerness))``); ``labels`` int64 ``[K]`` (1..C), highest score
  first;
* outputs with ``postprocess=False``: the raw head outputs per FPN level ``l``,
  ``cls_logits_l`` ``[1, C, H_l, W_l]``, ``bbox_reg_l`` ``[1, 4, H_l, W_l]`` (pixels) and
  ``centerness_l`` ``[1, 1, H_l, W_l]`` (logits).

The post-processing gives the detections of :class:`~fcos_core.modeling.rpn.fcos.inference.FCOSPostProcessor`
with fixed-size tensors (no data-dependent shape before the NMS):

* per level, the ranking score ``cls_prob * centerness_prob`` is set to -1 where
  ``cls_prob <= INFERENCE_TH`` and the ``min(PRE_NMS_TOP_N, H_l W_l C)`` best (location, class)
  pairs are taken; the sentinel ones are dropped by the NMS's ``score_threshold``;
* class-aware NMS is ONNX ``NonMaxSuppression`` with one score row per class (exact, no box offsets);
* the original NMS measures widths as ``x2 - x1 + 1`` (legacy IoU) and ONNX ``NonMaxSuppression``
  as ``x2 - x1``: the boxes given to the NMS are widened by one pixel on x2 and y2, which makes the
  plain IoU of the widened boxes equal to the legacy IoU of the boxes (intersection
  ``min(x2 + 1) - max(x1) = min(x2) - max(x1) + 1``, areas likewise; only the float32 rounding of
  the ``+ 1`` can differ); the boxes returned are not widened.

Metadata: ``metadata_props`` holds ``"categories"``, the class names as a json list indexed by label,
background first (``["__background", name of label 1, ...]``), so that a consumer of the graph
names its labels without the dataset (:func:`read_categories`).

Known differences from PyTorch, all at near-ties closer than the float32 noise of the two
runtimes' convolutions: ranking scores at the PRE_NMS_TOP_N cut or final scores (order, the
DETECTIONS_PER_IMG cut) may fall the other way; so may an IoU at NMS_TH (ONNX Runtime also
compares it in float32, the ``ml_nms`` kernel in float64). A detection whose score underflows to
exactly 0 is dropped.
"""
import json
import warnings

import torch
from torch import nn

from fcos_core.engine.classes import category_names, resolve_num_classes_for_inference
from fcos_core.layers import ml_nms
from fcos_core.layers.dcn import DeformConv
from fcos_core.modeling.detector import build_detection_model
from fcos_core.modeling.rpn.fcos.inference import decode_boxes
from fcos_core.modeling.rpn.fcos.target_assignment import compute_locations_per_level
from fcos_core.utils.checkpoint import DetectronCheckpointer

__all__ = ["ExportableFCOS", "export_onnx", "export_checkpoint", "legacy_class_nms", "class_nms", "OUTPUT_NAMES",
           "read_categories"]

OUTPUT_NAMES = ("boxes", "scores", "labels")
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


def _topk_size(n, k):
    """``min(k, n)`` for a dimension ``n`` that is an int, or a traced 0-dim tensor when exporting."""
    if isinstance(n, torch.Tensor):
        return torch.clamp(n, max=k)
    return min(n, k)


def _pad_to_divisible(image, size_divisible):
    """Zero-pad [1, 3, H, W] at the bottom and right to a multiple of ``size_divisible``."""
    if size_divisible <= 0:
        return image
    h, w = image.shape[-2:]
    pad_h = (size_divisible - h % size_divisible) % size_divisible
    pad_w = (size_divisible - w % size_divisible) % size_divisible
    return nn.functional.pad(image, [0, pad_w, 0, pad_h])


class ExportableFCOS(nn.Module):
    """A :class:`GeneralizedRCNN` FCOS on one image tensor, in fixed-size ops (see the module docstring).

    Args:
        model: the detector (``build_detection_model``), in eval mode, weights loaded.
        postprocess: False returns the raw head outputs instead of detections.

    forward(image [1, 3, H, W]) -> (boxes [K, 4], scores [K], labels [K]) or, without
    post-processing, the tuple ``cls_logits_*, bbox_reg_*, centerness_*`` over levels.

    The graph's post-processing is the original convention's; a model of MODEL.FCOS.CONVENTION
    "torchvision" (locations from the padded size, its own thresholds and NMS) is refused with
    ``postprocess`` (ValueError); its raw head outputs (``postprocess=False``) export as any other.
    """

    def __init__(self, model, postprocess=True):
        super().__init__()
        convention = getattr(model.rpn, "convention", "original")
        if postprocess and convention != "original":
            raise ValueError(
                "ONNX export with post-processing supports MODEL.FCOS.CONVENTION 'original' only, this model has "
                "{!r} (e.g. configs/torchvision/*): export the raw head outputs (tools/export_onnx.py "
                "--no-postprocess) and post-process as torchvision does".format(convention))
        self.backbone = model.backbone
        self.head = model.rpn.head
        self.size_divisibility = model.size_divisibility
        self.fpn_strides = list(model.rpn.fpn_strides)
        self.selector = model.rpn.box_selector_test
        self.postprocess = postprocess

    def output_names(self):
        """Names of the graph outputs, in order."""
        if self.postprocess:
            return list(OUTPUT_NAMES)
        levels = range(len(self.fpn_strides))
        return [f"{name}_{i}" for name in ("cls_logits", "bbox_reg", "centerness") for i in levels]

    def forward(self, image):
        features = self.backbone(_pad_to_divisible(image, self.size_divisibility))
        box_cls, box_reg, centerness = self.head(features)
        if not self.postprocess:
            return tuple(box_cls) + tuple(box_reg) + tuple(centerness)
        h, w = image.shape[-2:]
        per_level = [
            self._candidates(cls[0], reg[0], ctr[0], stride, h, w)
            for cls, reg, ctr, stride in zip(box_cls, box_reg, centerness, self.fpn_strides)
        ]
        boxes, scores, labels = (torch.cat(parts) for parts in zip(*per_level))
        return self._nms_and_top(boxes, scores, labels)

    def _candidates(self, cls, reg, ctr, stride, img_h, img_w):
        """Best ``PRE_NMS_TOP_N`` (location, class) pairs of one level: boxes [k, 4], scores [k],
        labels [k]; non-candidates have score -1."""
        sel = self.selector
        num_classes, fh, fw = cls.shape
        locations = compute_locations_per_level(fh, fw, stride, device=cls.device)
        cls_prob = cls.permute(1, 2, 0).reshape(-1, num_classes).sigmoid()
        ctr_prob = ctr.reshape(-1).sigmoid()
        rank = cls_prob * ctr_prob[:, None]
        rank = torch.where(cls_prob > sel.pre_nms_thresh, rank, torch.full_like(rank, _SENTINEL)).reshape(-1)
        rank, flat = rank.topk(_topk_size(rank.shape[0], sel.pre_nms_top_n))
        loc_idx = torch.div(flat, num_classes, rounding_mode="floor")
        distances = reg.permute(1, 2, 0).reshape(-1, 4)[loc_idx]
        boxes = decode_boxes(locations[loc_idx], distances)
        # clip to [0, W - 1] x [0, H - 1] as BoxList.clip_to_image
        x1, y1, x2, y2 = boxes.unbind(1)
        max_x, max_y = img_w - 1, img_h - 1
        boxes = torch.stack(
            (x1.clamp(min=0).clamp(max=max_x), y1.clamp(min=0).clamp(max=max_y),
             x2.clamp(min=0).clamp(max=max_x), y2.clamp(min=0).clamp(max=max_y)), dim=1)
        valid = rank > _SENTINEL
        if sel.min_size > 0:  # remove_small_boxes: widths x2 - x1 + 1
            valid = valid & (boxes[:, 2] - boxes[:, 0] + 1 >= sel.min_size) & (boxes[:, 3] - boxes[:, 1] + 1 >= sel.min_size)
        scores = torch.where(valid, rank.clamp(min=0).sqrt(), torch.full_like(rank, _SENTINEL))
        return boxes, scores, flat % num_classes + 1

    def _nms_and_top(self, boxes, scores, labels):
        """Class-aware NMS with the legacy IoU, then the DETECTIONS_PER_IMG best (ties kept)."""
        sel = self.selector
        if sel.nms_thresh > 0:
            keep = legacy_class_nms(boxes, scores, labels, sel.num_classes - 1, sel.nms_thresh)
        else:  # no NMS, as FCOSPostProcessor: every candidate (the sentinels have score -1)
            keep = (scores > 0).nonzero()[:, 0]
        kept_scores, order = scores[keep].topk(keep.shape[0])
        keep = keep[order]
        if sel.fpn_post_nms_top_n > 0:
            # the n-th best score (the last one when fewer): keep every score >= it, as kthvalue does
            n = _topk_size(keep.shape[0], sel.fpn_post_nms_top_n)
            # kept scores are > 0, so the sentinel appended for an empty list keeps nothing
            padded = torch.cat((kept_scores, kept_scores.new_full((1,), _SENTINEL)))
            keep = keep[kept_scores >= padded[n - 1]]
        return boxes[keep], scores[keep], labels[keep]


def legacy_class_nms(boxes, scores, labels, num_classes, iou_threshold):
    """Class-aware NMS with the legacy ``x2 - x1 + 1`` IoU of ``ml_nms``, as ONNX ``NonMaxSuppression``.

    Args:
        boxes (Tensor[N, 4]): ``xyxy`` pixels.
        scores (Tensor[N]): boxes with a score <= 0 are dropped (the candidates' sentinel).
        labels (Tensor[N]): int64 in 1..num_classes.

    Returns:
        Tensor[K] int64: kept indices into ``boxes``, grouped by class (not sorted by score).
    """
    classes = torch.arange(1, num_classes + 1, device=labels.device)
    per_class = torch.where(labels[None, :] == classes[:, None], scores[None, :],
                            torch.full_like(scores, _SENTINEL)[None, :])
    # plain IoU of boxes one pixel wider on x2 and y2 == legacy IoU of the boxes (module docstring)
    widened = torch.cat((boxes[:, :2], boxes[:, 2:] + 1), dim=1)
    return class_nms(widened, per_class, iou_threshold, 0.0)


DEFORM_CONV_OPSET = 19  # the first opset with DeformConv


def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                            dilation_h, dilation_w, groups, offset_groups, use_mask):
    """``torchvision::deform_conv2d`` as ONNX ``DeformConv`` (same offset layout, mask optional)."""
    from torch.onnx import symbolic_helper

    def const(value, name):
        return symbolic_helper._get_const(value, "i", name)

    inputs = [input, weight, offset, bias]
    if symbolic_helper._get_const(use_mask, "b", "use_mask"):
        inputs.append(mask)
    return g.op("DeformConv", *inputs,
                strides_i=[const(stride_h, "stride_h"), const(stride_w, "stride_w")],
                pads_i=[const(pad_h, "pad_h"), const(pad_w, "pad_w")] * 2,
                dilations_i=[const(dilation_h, "dilation_h"), const(dilation_w, "dilation_w")],
                group_i=const(groups, "groups"), offset_group_i=const(offset_groups, "offset_groups"))


def _has_deformable_conv(model):
    return any(isinstance(m, DeformConv) for m in model.modules())


def export_onnx(model, path, postprocess=True, opset=None, example_size=(256, 320), categories=None):
    """Write ``model`` (a GeneralizedRCNN FCOS in eval mode) to ``path`` as ONNX; ``categories``
    (class names, background first), when given, go into the metadata as ``"categories"``.

    ``opset`` None: 17, or 19 for a model with deformable convolutions (``*_dcnv2_*`` configs),
    which become ONNX ``DeformConv``.

    Uses the TorchScript-based exporter (``dynamo=False``), still in torch 2.14 though deprecated:
    the ``torch.export`` one (``dynamo=True``, which also needs ``onnxscript``) exports the
    backbone and head but stops at the NMS, whose output size depends on the data, and does not
    use the ``symbolic`` of :class:`_ClassNMS`. H and W of the input are dynamic.

    Returns:
        (list[str], int): the output names and the opset used.
    """
    deformable = _has_deformable_conv(model)
    if opset is None:
        opset = DEFORM_CONV_OPSET if deformable else 17
    if deformable and opset < DEFORM_CONV_OPSET:
        raise ValueError(f"deformable convolutions need ONNX opset {DEFORM_CONV_OPSET} or later, got {opset}")
    if deformable:
        torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic, DEFORM_CONV_OPSET)
    wrapper = ExportableFCOS(model, postprocess=postprocess).eval()
    example = torch.zeros(1, 3, *example_size)
    names = wrapper.output_names()
    dynamic = {"image": {2: "height", 3: "width"}}
    if postprocess:
        dynamic.update({name: {0: "detections"} for name in names})
    else:
        dynamic.update({name: {2: f"h{name[-1]}", 3: f"w{name[-1]}"} for name in names})
    with torch.no_grad(), warnings.catch_warnings():
        # the NMS checks its inputs in Python while tracing; the graph uses NonMaxSuppression instead
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"fcos_core\.layers\.nms")
        torch.onnx.export(wrapper, (example,), path, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=names, dynamic_axes=dynamic)
    if categories is not None:
        write_metadata(path, {CATEGORIES: json.dumps(list(categories))})
    return names, opset


CATEGORIES = "categories"  # metadata key: json list of class names, background first


def write_metadata(path, metadata):
    """Set the ONNX file's ``metadata_props`` entries ``metadata`` (str -> str), keeping the others."""
    import onnx

    graph = onnx.load(path)
    kept = [p for p in graph.metadata_props if p.key not in metadata]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=str(value))
    onnx.save(graph, path)


def read_categories(path):
    """The class names (background first) in an exported file's metadata, or None."""
    import onnx

    for prop in onnx.load(path, load_external_data=False).metadata_props:
        if prop.key == CATEGORIES:
            return json.loads(prop.value)
    return None


def export_checkpoint(cfg, path, postprocess=True, opset=None, categories_from=None):
    """Build the detector of ``cfg`` on the CPU, load MODEL.WEIGHT and export it to ``path``, with the
    class names in the metadata: ``categories_from`` (a COCO json), else the checkpoint's, else COCO's
    for 80 classes, else numbered (:func:`fcos_core.engine.classes.category_names`).
    MODEL.FCOS.NUM_CLASSES 0 takes the checkpoint's count.

    Returns:
        (list[str], int, list[str]): output names, opset, class names.
    """
    cfg = resolve_num_classes_for_inference(cfg, cfg.MODEL.WEIGHT)
    model = build_detection_model(cfg).eval()
    extra = DetectronCheckpointer(cfg, model).load(cfg.MODEL.WEIGHT or None, use_latest=False)
    names = category_names(cfg.MODEL.FCOS.NUM_CLASSES - 1, categories_from, checkpoint_names=extra.get(CATEGORIES))
    outputs, opset = export_onnx(model, path, postprocess=postprocess, opset=opset, categories=names)
    return outputs, opset, names
