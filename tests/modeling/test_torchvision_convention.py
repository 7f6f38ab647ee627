"""MODEL.FCOS.CONVENTION "torchvision": locations as torchvision's anchor centres, and its post-processing rules
(the whole detector against torchvision's is tests/modeling/test_torchvision_parity.py)."""
import math

import pytest
import torch

from fcos_core.config import cfg as default_cfg
from fcos_core.modeling.rpn.fcos.fcos import FCOSModule
from fcos_core.modeling.rpn.fcos.inference import FCOSPostProcessor, make_fcos_postprocessor
from fcos_core.modeling.rpn.fcos.target_assignment import compute_locations_per_level, torchvision_locations_per_level
from fcos_core.structures.image_list import ImageList

STRIDES = [8, 16, 32, 64, 128]


def _grid(size, stride):
    """Feature-map size of a padded image side after the backbone: /8, /16, /32, then two stride-2 3x3 convs."""
    return size // stride if stride <= 32 else _conv_out(_grid(size, stride // 2))


def _conv_out(n):
    return (n + 2 - 3) // 2 + 1


@pytest.mark.parametrize("padded", [(800, 1216), (160, 512), (96, 128)])
def test_locations_are_torchvisions_anchor_centres(padded):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = [(_grid(padded[0], s), _grid(padded[1], s)) for s in STRIDES]
    generator = AnchorGenerator(tuple((s,) for s in STRIDES), ((1.0,),) * 5)
    features = [torch.zeros(1, 1, h, w) for h, w in sizes]
    anchors = generator(ImageList(torch.zeros(1, 3, *padded), [padded]), features)[0]
    centres = torch.stack(((anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2), dim=1)
    ours = torch.cat([torchvision_locations_per_level(h, w, padded) for h, w in sizes])
    assert torch.equal(ours, centres)


def test_p6_stride_follows_the_padded_size():
    """Padded height 800: P6 has 13 rows, 800 // 13 = 61 pixels apart (not 64), and no half-stride offset."""
    loc = torchvision_locations_per_level(13, 38, (800, 1216))
    ys = loc[:, 1].reshape(13, 38)[:, 0]
    xs = loc[:, 0].reshape(13, 38)[0]
    assert ys.tolist() == [61.0 * i for i in range(13)]
    assert xs.tolist() == [32.0 * j for j in range(38)]
    assert compute_locations_per_level(13, 38, 64)[0].tolist() == [32.0, 32.0]  # original: s // 2 offset


def test_the_module_places_locations_by_its_convention():
    features = [torch.zeros(1, 1, 13, 38)]
    tv = FCOSModule(None, None, None, [64], convention="torchvision")
    original = FCOSModule(None, None, None, [64])
    assert torch.equal(tv.compute_locations(features, (800, 1216))[0], torchvision_locations_per_level(13, 38, (800, 1216)))
    assert torch.equal(original.compute_locations(features)[0], compute_locations_per_level(13, 38, 64))
    with pytest.raises(ValueError, match="MODEL.FCOS.CONVENTION"):
        FCOSModule(None, None, None, [64], convention="mmdet")
    c = default_cfg.clone()
    c.merge_from_list(["MODEL.FCOS.CONVENTION", "mmdet"])
    with pytest.raises(ValueError, match="MODEL.FCOS.CONVENTION"):
        make_fcos_postprocessor(c)


def _logit(p):
    return math.log(p / (1 - p))


def _one_level(cls_probs, ctr_probs, boxes_ltrb):
    """Head outputs of one level of 1 x L cells: cls [1, C, 1, L], reg [1, 4, 1, L], ctr [1, 1, 1, L]."""
    cls = torch.tensor([[_logit(p) for p in row] for row in cls_probs]).t()[None, :, None, :]
    ctr = torch.tensor([_logit(p) for p in ctr_probs])[None, None, None, :]
    reg = torch.tensor(boxes_ltrb, dtype=torch.float32).t()[None, :, None, :]
    return [cls], [reg], [ctr]


def _run(processor, cls, reg, ctr, locations, image_size):
    return processor([locations], cls, reg, ctr, [image_size])[0]


def test_threshold_on_the_detection_score():
    """cls 0.5, ctr 0.01: sqrt = 0.07, below 0.2 for torchvision; the original thresholds cls (0.5 > 0.2)."""
    cls, reg, ctr = _one_level([[0.5]], [0.01], [[2, 2, 2, 2]])
    loc = torch.tensor([[10.0, 10.0]])
    assert len(_run(FCOSPostProcessor(0.2, 1000, 0.6, 100, 0, 2), cls, reg, ctr, loc, (40, 40))) == 1
    tv = FCOSPostProcessor(0.2, 1000, 0.6, 100, 0, 2, threshold_on_score=True, legacy_boxes=False, keep_ties=False)
    assert len(_run(tv, cls, reg, ctr, loc, (40, 40))) == 0


def test_continuous_boxes_clip_to_the_image_size():
    cls, reg, ctr = _one_level([[0.9]], [0.9], [[5, 5, 100, 100]])
    loc = torch.tensor([[30.0, 20.0]])
    original = _run(FCOSPostProcessor(0.2, 1000, 0.6, 100, 0, 2), cls, reg, ctr, loc, (40, 50))
    tv = _run(FCOSPostProcessor(0.2, 1000, 0.6, 100, 0, 2, True, False, False), cls, reg, ctr, loc, (40, 50))
    assert original.bbox.tolist() == [[25.0, 15.0, 49.0, 39.0]]
    assert tv.bbox.tolist() == [[25.0, 15.0, 50.0, 40.0]]


def test_exactly_n_detections_with_ties():
    """Three classes with the same score at one location (no NMS across classes): n = 2 keeps 2, not the tie."""
    cls, reg, ctr = _one_level([[0.8, 0.8, 0.8]], [0.9], [[3, 3, 3, 3]])
    loc = torch.tensor([[10.0, 10.0]])
    ties = _run(FCOSPostProcessor(0.2, 1000, 0.6, 2, 0, 4), cls, reg, ctr, loc, (40, 40))
    exact = _run(FCOSPostProcessor(0.2, 1000, 0.6, 2, 0, 4, True, False, False), cls, reg, ctr, loc, (40, 40))
    assert len(ties) == 3 and len(exact) == 2
    assert exact.get_field("labels").tolist() == [1, 2]


def test_nms_without_the_legacy_pixel():
    """Two boxes of IoU 0.5 (continuous) and 0.535 (legacy +1): NMS at 0.51 keeps both only without the +1."""
    cls, reg, ctr = _one_level([[0.9], [0.8]], [0.9, 0.9], [[0, 0, 10, 10], [0, 0, 10, 10]])
    loc = torch.tensor([[0.0, 0.0], [10 / 3, 0.0]])  # 10 x 10 boxes 3.33 apart in x
    legacy = FCOSPostProcessor(0.2, 1000, 0.51, 100, 0, 2, threshold_on_score=True, keep_ties=False)
    continuous = FCOSPostProcessor(0.2, 1000, 0.51, 100, 0, 2, True, False, False)
    assert len(_run(legacy, cls, reg, ctr, loc, (40, 40))) == 1
    assert len(_run(continuous, cls, reg, ctr, loc, (40, 40))) == 2
