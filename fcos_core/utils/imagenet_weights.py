"""Pure key mappings from torchvision ImageNet state dicts to our backbone bodies.

The returned dicts load with ``strict=True`` into ``backbone.body`` (not ``backbone``).
Tensors are shared, not copied. BatchNorm's ``num_batches_tracked`` is dropped for the
ResNet (FrozenBatchNorm2d has no such buffer) and kept for MobileNetV2 (BatchNorm2d).
"""
import re
from collections import OrderedDict
from typing import Dict

import torch
from torch import Tensor

from fcos_core.utils.formats.torchvision import rename_torchvision_fcos_key


def torchvision_resnet_to_body(state_dict: Dict[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """Map ``torchvision.models.resnet*`` / ``resnext*`` keys to :class:`ResNet` keys.

    ``conv1.*`` -> ``stem.conv1.*``, ``bn1.*`` -> ``stem.bn1.*``, ``layerN.M.*`` unchanged
    (same names: conv1/bn1/conv2/bn2[/conv3/bn3], downsample.0/1); ``fc.*`` and
    ``num_batches_tracked`` dropped. torchvision puts the bottleneck stride on the 3x3
    conv: build the body with ``stride_in_1x1=False`` for these weights.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        if key.startswith(("conv1.", "bn1.")):
            key = "stem." + key
        out[key] = value
    return out


# torchvision's mobilenet_v2 nests Conv2dNormActivation blocks; ours is flat.
_MNV2_EXPANDING = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
_MNV2_NOT_EXPANDING = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
_MNV2_BLOCK_KEY = re.compile(r"^features\.(\d+)\.conv\.(\d+(?:\.\d)?)\.([a-z_]+)$")


def torchvision_mobilenet_v2_to_body(state_dict: Dict[str, Tensor]
                                     ) -> "OrderedDict[str, Tensor]":
    """Map ``torchvision.models.mobilenet_v2`` keys to :class:`MobileNetV2` keys.

    ``features.0.{0,1}.*`` are unchanged; inside a block, torchvision's
    ``conv.0.0/0.1/1.0/1.1/2/3`` become ``conv.0/1/3/4/6/7`` (with expansion) and
    ``conv.0.0/0.1/1/2`` become ``conv.0/1/3/4`` (without); ``features.18`` (1x1 conv to
    1280) and ``classifier.*`` are dropped. A state dict that is already flat (the
    ``tonylins/pytorch-mobilenet-v2`` weights the original FCOS starts from) only loses
    those two.
    """
    matches = [m for m in map(_MNV2_BLOCK_KEY.match, state_dict) if m]
    nested = any(m.group(2) == "0.0" for m in matches)
    expanding = {m.group(1) for m in matches if m.group(2) == "1.0"}
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(("classifier.", "features.18.")):
            continue
        match = _MNV2_BLOCK_KEY.match(key)
        if match and nested:
            block, layer, leaf = match.groups()
            table = _MNV2_EXPANDING if block in expanding else _MNV2_NOT_EXPANDING
            key = "features.{}.conv.{}.{}".format(block, table[layer], leaf)
        out[key] = value
    return out


def torchvision_fcos_to_detector(state_dict, num_levels=5, add_scales=True):
    """Rename ``torchvision.models.detection.fcos_resnet50_fpn`` keys to our detector's, every tensor kept.

    For a torchvision FCOS built with as many logits as our classes (``num_classes`` = C, as the
    benchmark and the forward-parity test build it): the classifier is taken as it is. torchvision's
    published COCO weights (91 logits indexed by COCO id) go through
    :func:`fcos_core.utils.formats.torchvision.torchvision_fcos_to_detector`, which also selects the
    classifier rows and reports what the config needs; the key mapping is that module's.
    torchvision's head has no per-level Scale (it equals ours with every scale 1 and
    NORM_REG_TARGETS, CENTERNESS_ON_REG, STRIDE_IN_1X1 False): with ``add_scales`` the
    ``rpn.head.scales.<l>.scale`` entries are added as ones. ``num_batches_tracked`` is dropped.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        if not key.endswith("num_batches_tracked"):
            out[rename_torchvision_fcos_key(key)] = value
    if add_scales:
        for level in range(num_levels):
            out[f"rpn.head.scales.{level}.scale"] = torch.ones(1)
    return out
