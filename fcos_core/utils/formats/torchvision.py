"""torchvision's FCOS (``torchvision.models.detection.fcos_resnet50_fpn``) under our detector's keys.

torchvision's COCO weights (``FCOS_ResNet50_FPN_Weights.COCO_V1``, file
``fcos_resnet50_fpn_coco-99b0c9b7.pth``) are a bare state dict with keys ``backbone.body.*``
(ResNet-50, stride on the 3x3 convs, FrozenBatchNorm2d with eps 1e-5), ``backbone.fpn.*``
(P6/P7 from P5) and ``head.classification_head.*`` / ``head.regression_head.*`` (GroupNorm towers,
centerness on the regression tower, ReLU box outputs scaled by the anchor size 8..128, no
per-level Scale). Its classifier has 91 logits indexed by COCO category id: index 0
("__background__") and the 10 ids that COCO does not use ("N/A") are never trained. Ours has one
logit per class, label l = the l-th COCO category id in increasing order (NUM_CLASSES 81).

The detections equal torchvision's only with its pre- and post-processing, which
``configs/torchvision/fcos_resnet50_fpn_coco.yaml`` selects (:data:`REQUIRED_CONFIG`; see
docs/torchvision_fcos.md).
"""
import re
from collections import OrderedDict

import torch

from .report import ConversionReport

# torchvision's 91-entry COCO category list has "N/A" at these ids (and "__background__" at 0)
COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
# the 80 COCO category ids in increasing order: our label l is COCO_CATEGORY_IDS[l - 1]
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in COCO_UNUSED_IDS)
TORCHVISION_COCO_LOGITS = 91

SUGGESTED_CONFIG = "torchvision/fcos_resnet50_fpn_coco.yaml"
# what the converted weights need from the config (NUM_CLASSES is added per file)
REQUIRED_CONFIG = OrderedDict([
    ("MODEL.BACKBONE.CONV_BODY", "R-50-FPN-RETINANET"),
    ("MODEL.RESNETS.STRIDE_IN_1X1", False),
    ("MODEL.RESNETS.FROZEN_BN_EPS", 1e-5),
    ("MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 256),
    ("MODEL.RETINANET.USE_C5", False),
    ("MODEL.FPN.USE_GN", False),
    ("MODEL.FPN.USE_RELU", False),
    ("MODEL.FCOS.FPN_STRIDES", [8, 16, 32, 64, 128]),
    ("MODEL.FCOS.NUM_CONVS", 4),
    ("MODEL.FCOS.NORM_REG_TARGETS", True),
    ("MODEL.FCOS.CENTERNESS_ON_REG", True),
    ("MODEL.FCOS.USE_DCN_IN_TOWER", False),
    ("MODEL.FCOS.CONVENTION", "torchvision"),
    ("INPUT.RESIZE_STYLE", "torchvision"),
    ("INPUT.TO_BGR255", False),
    ("INPUT.PIXEL_MEAN", [0.485, 0.456, 0.406]),
    ("INPUT.PIXEL_STD", [0.229, 0.224, 0.225]),
    ("DATALOADER.SIZE_DIVISIBILITY", 32),
])

_RENAMES = [
    ("backbone.body.conv1.", "backbone.body.stem.conv1."),
    ("backbone.body.bn1.", "backbone.body.stem.bn1."),
    *[(f"backbone.fpn.inner_blocks.{i}.0.", f"backbone.fpn.fpn_inner{i + 2}.") for i in range(3)],
    *[(f"backbone.fpn.layer_blocks.{i}.0.", f"backbone.fpn.fpn_layer{i + 2}.") for i in range(3)],
    ("backbone.fpn.extra_blocks.", "backbone.fpn.top_blocks."),
    ("head.classification_head.conv.", "rpn.head.cls_tower."),
    ("head.classification_head.cls_logits.", "rpn.head.cls_logits."),
    ("head.regression_head.conv.", "rpn.head.bbox_tower."),
    ("head.regression_head.bbox_reg.", "rpn.head.bbox_pred."),
    ("head.regression_head.bbox_ctrness.", "rpn.head.centerness."),
]
_CLS_LOGITS = "head.classification_head.cls_logits."
_SIGNATURE = ("backbone.body.conv1.weight", _CLS_LOGITS + "weight", "head.regression_head.bbox_ctrness.weight")


def looks_like_torchvision_fcos(state_dict):
    """Whether ``state_dict`` (a dict of tensors) is a torchvision FCOS detector's: True when it has
    torchvision's stem, classification logits and centerness keys."""
    return isinstance(state_dict, dict) and all(key in state_dict for key in _SIGNATURE)


def rename_torchvision_fcos_key(key):
    """Our key for torchvision FCOS key ``key`` (str); unchanged where no rename applies."""
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def kept_class_rows(num_logits):
    """The classifier rows that become our classes, in label order, and the dropped rows with why.

    91 logits (torchvision's COCO layout): the 80 COCO category ids in increasing order; index 0
    and the 10 unused ids are dropped. Any other count N (a model trained with ``num_classes=N``,
    index 0 the background): rows 1..N-1.

    Returns:
        (list[int] kept, list[(int, str)] dropped).
    """
    if num_logits < 2:
        raise ValueError("a torchvision FCOS classifier of {} logits: need index 0 (background) and at least "
                         "one class".format(num_logits))
    if num_logits == TORCHVISION_COCO_LOGITS:
        dropped = [(0, "__background__, never trained")]
        dropped += [(i, "COCO id {} is unused ('N/A'), never trained".format(i)) for i in COCO_UNUSED_IDS]
        return list(COCO_CATEGORY_IDS), dropped
    return list(range(1, num_logits)), [(0, "index 0 is the background in torchvision's detectors")]


def _convert_classifier(state_dict, out, report):
    """Copy the kept rows of cls_logits' weight [K, 256, 3, 3] and bias [K] into ``out``; record the
    dropped rows in ``report``. Returns the number of classes kept."""
    weight, bias = state_dict[_CLS_LOGITS + "weight"], state_dict[_CLS_LOGITS + "bias"]
    kept, dropped = kept_class_rows(weight.shape[0])
    index = torch.tensor(kept, dtype=torch.int64)
    for name, tensor in (("weight", weight), ("bias", bias)):
        out["rpn.head.cls_logits." + name] = tensor.index_select(0, index)
        report.mapped.append((_CLS_LOGITS + name, "rpn.head.cls_logits." + name))
    for row, why in dropped:
        report.dropped.append(("{}{{weight,bias}}[{}]".format(_CLS_LOGITS, row), why))
    report.notes.append("cls_logits: rows {} of {} kept, in this order (our labels 1..{}){}".format(
        _ranges(kept), weight.shape[0], len(kept),
        ", the COCO category ids in increasing order" if weight.shape[0] == TORCHVISION_COCO_LOGITS else ""))
    worst = max(dropped, key=lambda d: float(bias[d[0]]))
    report.notes.append("largest classifier bias among the dropped rows: {:.4g} (row {}, {})".format(
        float(bias[worst[0]]), worst[0], worst[1]))
    return len(kept)


def _ranges(rows):
    """``[1, 2, 3, 5]`` -> "1-3, 5"."""
    parts, start = [], rows[0]
    for prev, cur in zip(rows, rows[1:] + [None]):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else "{}-{}".format(start, prev))
            start = cur
    return ", ".join(parts)


def torchvision_fcos_to_detector(state_dict, num_levels=5):
    """Map a torchvision ``fcos_resnet50_fpn`` state dict onto our detector's keys.

    Args:
        state_dict: torchvision's state dict (key -> Tensor), e.g. ``torch.load`` of
            ``fcos_resnet50_fpn_coco-99b0c9b7.pth``.
        num_levels: FPN levels (5, P3-P7): one ``rpn.head.scales.<l>.scale`` each, filled with 1.

    Returns:
        (OrderedDict, ConversionReport): our state dict (loads with ``strict=True`` into the model of
        ``configs/torchvision/fcos_resnet50_fpn_coco.yaml``; tensors shared with ``state_dict`` except
        the classifier, whose kept rows are copied) and what was mapped, dropped and filled, with the
        config it needs. ``num_batches_tracked`` counters are dropped (FrozenBatchNorm2d has none).

    Raises ValueError when ``state_dict`` is not a torchvision FCOS's.
    """
    if not looks_like_torchvision_fcos(state_dict):
        missing = [k for k in _SIGNATURE if not isinstance(state_dict, dict) or k not in state_dict]
        raise ValueError("not a torchvision FCOS state dict: missing {}".format(", ".join(missing)))
    report = ConversionReport(source="torchvision", suggested_config=SUGGESTED_CONFIG)
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(_CLS_LOGITS):
            continue
        if key.endswith("num_batches_tracked"):
            report.dropped.append((key, "BatchNorm counter, FrozenBatchNorm2d has none"))
            continue
        new = rename_torchvision_fcos_key(key)
        if new == key and not re.match(r"backbone\.body\.layer\d\.", key):
            report.dropped.append((key, "no counterpart in our detector"))
            continue
        out[new] = value
        report.mapped.append((key, new))
    num_classes = _convert_classifier(state_dict, out, report)
    for level in range(num_levels):
        out["rpn.head.scales.{}.scale".format(level)] = torch.ones(1)
        report.filled.append(("rpn.head.scales.{}.scale".format(level), "ones: torchvision's head has no per-level Scale"))
    report.required_config = OrderedDict(REQUIRED_CONFIG)
    report.required_config["MODEL.FCOS.NUM_CLASSES"] = num_classes + 1
    return out, report
