"""boxlist_ops: legacy IoU, NMS wrappers, small-box filter, concatenation."""
import pytest
import torch

from fcos_core.structures import BoxList
from fcos_core.structures.boxlist_ops import (
    box_iou_legacy,
    boxlist_iou,
    boxlist_ml_nms,
    boxlist_nms,
    cat_boxlist,
    remove_small_boxes,
)


def test_box_iou_legacy_hand_values():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0], [0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 30.0, 30.0]])
    iou = box_iou_legacy(a, b)
    assert iou.shape == (2, 3)
    # 10x10 boxes overlapping on 5 columns: 50 / (100 + 100 - 50)
    expected = torch.tensor([[50 / 150, 1.0, 0.0], [0.0, 25 / 100, 0.0]])
    assert torch.allclose(iou, expected)


def test_boxlist_iou_modes_and_size_check():
    a = BoxList([[0.0, 0.0, 9.0, 9.0]], (50, 50))
    b = BoxList([[5.0, 5.0, 14.0, 14.0]], (50, 50))
    expected = 25.0 / (200.0 - 25.0)
    assert torch.allclose(boxlist_iou(a, b), torch.tensor([[expected]]))
    assert torch.allclose(boxlist_iou(a.convert("xywh"), b.convert("xywh")), torch.tensor([[expected]]))
    with pytest.raises(RuntimeError):
        boxlist_iou(a, BoxList([[0.0, 0.0, 1.0, 1.0]], (50, 40)))


def _nms_case():
    boxes = torch.tensor([
        [0.0, 0.0, 9.0, 9.0],    # 0: best of class 1
        [1.0, 0.0, 10.0, 9.0],   # 1: IoU 90/110 = 0.818 with box 0
        [5.0, 0.0, 14.0, 9.0],   # 2: IoU 50/150 = 0.333 with box 0
        [0.0, 0.0, 9.0, 9.0],    # 3: same place as box 0, other class
    ])
    b = BoxList(boxes, (20, 20))
    b.add_field("scores", torch.tensor([0.9, 0.8, 0.7, 0.6]))
    b.add_field("labels", torch.tensor([1, 1, 1, 2]))
    return b


def test_boxlist_nms_hand_case():
    b = _nms_case()
    kept = boxlist_nms(b, 0.5)
    assert kept.get_field("scores").tolist() == pytest.approx([0.9, 0.7])
    assert kept.bbox.tolist() == [[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]]
    assert len(boxlist_nms(b, 0.5, max_proposals=1)) == 1
    assert len(boxlist_nms(b, 0.0)) == 4
    # continuous widths: IoU(0, 1) = 72/90 = 0.8 (suppressed), IoU(0, 2) = 36/126 (kept)
    assert len(boxlist_nms(b, 0.5, legacy=False)) == 2


def test_boxlist_nms_legacy_matters():
    # 2x2-pixel boxes (legacy) sharing one column: legacy IoU 2/6 = 0.33, continuous IoU 0 / 2 = 0
    b = BoxList([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]], (10, 10))
    b.add_field("scores", torch.tensor([0.9, 0.8]))
    assert len(boxlist_nms(b, 0.3)) == 1
    assert len(boxlist_nms(b, 0.3, legacy=False)) == 2


def test_boxlist_ml_nms_hand_case():
    b = _nms_case()
    kept = boxlist_ml_nms(b, 0.5)
    assert kept.get_field("scores").tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert kept.get_field("labels").tolist() == [1, 1, 2]
    assert len(boxlist_ml_nms(b, 0.5, max_proposals=2)) == 2


def test_nms_keeps_mode_and_does_not_alias():
    b = _nms_case().convert("xywh")
    before = b.bbox.clone()
    kept = boxlist_nms(b, 0.5)
    assert kept.mode == "xywh"
    for r in (kept, boxlist_nms(b, 0.0), boxlist_ml_nms(b, -1.0)):
        r.bbox.add_(1.0)
        r.get_field("scores").add_(1.0)
    assert torch.equal(b.bbox, before)
    assert b.get_field("scores").tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_remove_small_boxes_uses_legacy_width():
    b = BoxList([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 3.0, 9.0], [0.0, 0.0, 9.0, 3.5]], (20, 20))
    b.add_field("labels", torch.tensor([1, 2, 3]))
    kept = remove_small_boxes(b, 5)  # widths 5, 4, 10; heights 5, 10, 4.5
    assert kept.get_field("labels").tolist() == [1]
    assert torch.equal(kept.bbox, b.bbox[:1])


def test_cat_boxlist():
    a = _nms_case()
    b = _nms_case()[torch.tensor([1, 3])]
    c = cat_boxlist([a, b])
    assert len(c) == 6
    assert torch.equal(c.bbox, torch.cat([a.bbox, b.bbox]))
    assert c.get_field("labels").tolist() == [1, 1, 1, 2, 1, 2]
    single = cat_boxlist([a])
    single.bbox.add_(1.0)
    assert torch.equal(a.bbox, _nms_case().bbox)
    with pytest.raises(ValueError):
        cat_boxlist([a, BoxList(a.bbox, (30, 20))])
    with pytest.raises(ValueError):
        cat_boxlist([a, a.convert("xywh")])
    with pytest.raises(ValueError):
        cat_boxlist([a, a.copy_with_fields("scores")])
