"""The whole FCOS detector as one ONNX graph: backbone, head, box decoding and class-aware NMS.

Graph contract (``tools/export_onnx.py`` writes it, ``tests/export/test_onnx_export.py`` checks it):

* input ``image``: float32 ``[1, 3, H, W]``, any H and W: the image after the test transforms
  (for the original configs resized, then ``Normalize``: BGR 0-255 minus PIXEL_MEAN; for
  INPUT.RESIZE_STYLE "torchvision" RGB 0-1 normalised with PIXEL_MEAN / PIXEL_STD, then resized
  by ``TensorResize``), *not* padded; the graph pads it with zeros to a multiple of
  DATALOADER.SIZE_DIVISIBILITY as ``to_image_list`` does;
* outputs, with post-processing: ``boxes`` float32 ``[K, 4]`` ``xyxy`` in pixels of the input
  tensor, clipped to ``[0, W - 1] x [0, H - 1]`` (MODEL.FCOS.CONVENTION "original") or
  ``[0, W] x [0, H]`` ("torchvision"); ``scores`` float32 ``[K]``
  (``sqrt(sigmoid(cls) * sigmoid(centerness))``); ``labels`` int64 ``[K]`` (1..C), highest score
  first;
* outputs without post-processing (``postprocessor=None``): the raw head outputs per FPN level ``l``,
  ``cls_logits_l`` ``[1, C, H_l, W_l]``, ``bbox_reg_l`` ``[1, 4, H_l, W_l]`` (pixels) and
  ``centerness_l`` ``[1, 1, H_l, W_l]`` (logits).

The post-processing (:mod:`fcos_core.export.postprocess`, built from the config by
``make_export_postprocessor``) gives the detections of
:class:`~fcos_core.modeling.rpn.fcos.inference.FCOSPostProcessor` in either MODEL.FCOS.CONVENTION
with fixed-size tensors (no data-dependent shape before the NMS): per level the
``min(PRE_NMS_TOP_N, H_l W_l C)`` best candidates (non-candidates carry a sentinel score that the
NMS drops), class-aware NMS as ONNX ``NonMaxSuppression`` (boxes widened by one pixel for the
original's ``+1`` IoU, as they are for torchvision's continuous one), then the DETECTIONS_PER_IMG
cut. The torchvision convention's locations are computed in the graph from the padded input size.

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
from fcos_core.layers.dcn import DeformConv
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils.checkpoint import DetectronCheckpointer

from .postprocess import ExportPostProcessor, class_nms, legacy_class_nms, make_export_postprocessor

__all__ = ["ExportableFCOS", "export_onnx", "export_checkpoint", "legacy_class_nms", "class_nms", "OUTPUT_NAMES",
           "read_categories", "ExportPostProcessor", "make_export_postprocessor"]

OUTPUT_NAMES = ("boxes", "scores", "labels")


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
        postprocessor: an :class:`~fcos_core.export.postprocess.ExportPostProcessor`
            (:func:`~fcos_core.export.postprocess.make_export_postprocessor` of the model's config),
            or None for the raw head outputs.

    forward(image [1, 3, H, W]) -> (boxes [K, 4], scores [K], labels [K]) or, without
    post-processing, the tuple ``cls_logits_*, bbox_reg_*, centerness_*`` over levels.
    """

    def __init__(self, model, postprocessor=None):
        super().__init__()
        self.backbone = model.backbone
        self.head = model.rpn.head
        self.size_divisibility = model.size_divisibility
        self.num_levels = len(model.rpn.fpn_strides)
        if postprocessor is not None:
            _check_fits(postprocessor, model)
        self.postprocessor = postprocessor

    def output_names(self):
        """Names of the graph outputs, in order."""
        if self.postprocessor is not None:
            return list(OUTPUT_NAMES)
        return [f"{name}_{i}" for name in ("cls_logits", "bbox_reg", "centerness") for i in range(self.num_levels)]

    def forward(self, image):
        padded = _pad_to_divisible(image, self.size_divisibility)
        box_cls, box_reg, centerness = self.head(self.backbone(padded))
        if self.postprocessor is None:
            return tuple(box_cls) + tuple(box_reg) + tuple(centerness)
        return self.postprocessor(box_cls, box_reg, centerness, image.shape[-2:], padded.shape[-2:])


def _check_fits(postprocessor, model):
    """ValueError when the post-processor's classes, levels or convention are not the model's."""
    problems = []
    classes = model.rpn.head.cls_logits.out_channels + 1
    if postprocessor.num_classes != classes:
        problems.append("MODEL.FCOS.NUM_CLASSES {} (the model has {})".format(postprocessor.num_classes, classes))
    if list(postprocessor.fpn_strides) != list(model.rpn.fpn_strides):
        problems.append("MODEL.FCOS.FPN_STRIDES {} (the model has {})".format(
            list(postprocessor.fpn_strides), list(model.rpn.fpn_strides)))
    convention = getattr(model.rpn, "convention", "original")
    if postprocessor.convention != convention:
        problems.append("MODEL.FCOS.CONVENTION {!r} (the model has {!r})".format(postprocessor.convention, convention))
    if problems:
        raise ValueError("the export's post-processing does not fit the model: " + "; ".join(problems))


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


def export_onnx(model, path, postprocessor=None, opset=None, example_size=(256, 320), categories=None):
    """Write ``model`` (a GeneralizedRCNN FCOS in eval mode) to ``path`` as ONNX; ``categories``
    (class names, background first), when given, go into the metadata as ``"categories"``.

    ``postprocessor``: the graph's post-processing, ``make_export_postprocessor(cfg)`` of the config
    the model was built from; None exports the raw head outputs.

    ``opset`` None: 17, or 19 for a model with deformable convolutions (``*_dcnv2_*`` configs),
    which become ONNX ``DeformConv``.

    Uses the TorchScript-based exporter (``dynamo=False``), still in torch 2.14 though deprecated:
    the ``torch.export`` one (``dynamo=True``, which also needs ``onnxscript``) exports the
    backbone and head but stops at the NMS, whose output size depends on the data, and does not
    use the ``symbolic`` of the NMS (``fcos_core.export.postprocess._ClassNMS``). H and W of the input
    are dynamic.

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
    wrapper = ExportableFCOS(model, postprocessor).eval()
    example = torch.zeros(1, 3, *example_size)
    names = wrapper.output_names()
    dynamic = {"image": {2: "height", 3: "width"}}
    if postprocessor is not None:
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
    postprocessor = make_export_postprocessor(cfg) if postprocess else None
    outputs, opset = export_onnx(model, path, postprocessor, opset=opset, categories=names)
    return outputs, opset, names
