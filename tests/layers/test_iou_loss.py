"""IOULoss (FCOS box regression loss) against hand-computed values; Scale, the other FCOS-head layer."""
import math

import pytest
import torch

from fcos_core.layers.iou_loss import IOULoss, iou_loss, iou_loss_per_box
from fcos_core.layers.scale import Scale

PRED = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 1.0]])
TARGET = torch.tensor([[2.0, 2.0, 2.0, 2.0], [2.0, 1.0, 1.0, 3.0]])
# box 0: areas 4 and 16, intersection 2 x 2 = 4, union 16, IoU (4 + 1) / (16 + 1); enclosure 4 x 4
# box 1: areas 4 x 3 = 12 and 3 x 4 = 12, intersection (1 + 1) x (1 + 1) = 4, union 20,
#        IoU 5 / 21, enclosure (2 + 3) x (2 + 3) = 25
IOUS = [5 / 17, 5 / 21]
GIOUS = [5 / 17 - (16 - 16) / 16, 5 / 21 - (25 - 20) / 25]
HAND = {
    "iou": [-math.log(v) for v in IOUS],
    "linear_iou": [1 - v for v in IOUS],
    "giou": [1 - v for v in GIOUS],
}


def python_loss(pred, target, loss_type):
    """Independent float reference of one location's loss."""
    pl, pt, pr, pb = pred
    tl, tt, tr, tb = target
    inter = (min(pl, tl) + min(pr, tr)) * (min(pt, tt) + min(pb, tb))
    union = (pl + pr) * (pt + pb) + (tl + tr) * (tt + tb) - inter
    iou = (inter + 1) / (union + 1)
    enclose = (max(pl, tl) + max(pr, tr)) * (max(pt, tt) + max(pb, tb)) + 1e-7
    giou = iou - (enclose - union) / enclose
    return {"iou": -math.log(iou), "linear_iou": 1 - iou, "giou": 1 - giou}[loss_type]


@pytest.mark.parametrize("loss_type", ["iou", "linear_iou", "giou"])
def test_hand_values(loss_type):
    per_box = iou_loss_per_box(PRED, TARGET, loss_type)
    assert per_box.tolist() == pytest.approx(HAND[loss_type], rel=1e-6)
    loss = IOULoss(loss_type)(PRED, TARGET)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(sum(HAND[loss_type]), rel=1e-6)


@pytest.mark.parametrize("loss_type", ["iou", "linear_iou", "giou"])
def test_random_against_python_reference(loss_type):
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(50, 4, generator=g, dtype=torch.float64) * 20
    target = torch.rand(50, 4, generator=g, dtype=torch.float64) * 20
    expected = [python_loss(p.tolist(), t.tolist(), loss_type) for p, t in zip(pred, target)]
    assert iou_loss_per_box(pred, target, loss_type).tolist() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("loss_type", ["iou", "linear_iou", "giou"])
def test_weights(loss_type):
    m = IOULoss(loss_type)
    a, b = HAND[loss_type]
    weight = torch.tensor([0.5, 2.0])
    # a sum, not a mean: FCOS divides by the sum of the centerness targets itself
    assert m(PRED, TARGET, weight).item() == pytest.approx(0.5 * a + 2.0 * b, rel=1e-6)
    assert m(PRED, TARGET, torch.zeros(2)).item() == pytest.approx(a + b, rel=1e-6)


@pytest.mark.parametrize("loss_type", ["iou", "linear_iou", "giou"])
def test_gradients_finite_and_gradcheck(loss_type):
    g = torch.Generator().manual_seed(1)
    pred = (torch.rand(8, 4, generator=g, dtype=torch.float64) * 10).requires_grad_()
    target = torch.rand(8, 4, generator=g, dtype=torch.float64) * 10
    weight = torch.rand(8, generator=g, dtype=torch.float64)
    IOULoss(loss_type)(pred, target, weight).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    leaf = pred.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: iou_loss(p, target, weight, loss_type), (leaf,))
    # zero-size predictions (a location on a box border) stay finite too
    zero = torch.zeros(2, 4, requires_grad=True)
    IOULoss(loss_type)(zero, TARGET).backward()
    assert torch.isfinite(zero.grad).all()


def test_non_contiguous_and_empty():
    wide = torch.cat([PRED, torch.zeros(2, 4)], dim=1)[:, :4]
    assert not wide.is_contiguous()
    assert IOULoss()(wide, TARGET).item() == pytest.approx(sum(HAND["iou"]), rel=1e-6)
    assert IOULoss()(torch.zeros(0, 4), torch.zeros(0, 4)).item() == 0.0


def test_unknown_type():
    with pytest.raises(NotImplementedError):
        IOULoss("smooth_l1")


def test_scale():
    s = Scale(2.5)
    assert list(s.state_dict()) == ["scale"] and s.scale.shape == (1,) and s.scale.dtype == torch.float32
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(s(x), 2.5 * x)
    s(x).sum().backward()
    assert s.scale.grad.item() == pytest.approx(x.sum().item(), rel=1e-5)
    assert Scale().scale.item() == 1.0
