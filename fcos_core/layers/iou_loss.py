"""IoU loss on (l, t, r, b) distances, the box regression loss of FCOS.

FCOS (Tian et al., ICCV 2019, Eq. 2) regresses, at each positive location, the distances to the
four sides of its box and trains them with the UnitBox IoU loss (Yu et al. 2016), -ln(IoU).
MODEL.FCOS.LOC_LOSS_TYPE chooses "iou" (-ln IoU), "linear_iou" (1 - IoU) or "giou" (1 - GIoU,
Rezatofighi et al. 2019), as the original FCOS (which took the last two from FCOS_PLUS).

The formulas are the original's, kept exactly so that training reproduces:
areas are (l + r) * (t + b) (no +1), IoU = (inter + 1) / (union + 1), and the GIoU enclosing area
gets + 1e-7. The result is a sum, not a mean: FCOS divides it by the sum of the centerness targets.
"""
import torch
from torch import nn

LOSS_TYPES = ("iou", "linear_iou", "giou")


def iou_loss_per_box(pred, target, loss_type="iou"):
    """Per-location IoU losses.

    Arguments:
        pred (Tensor[N, 4]): predicted distances (l, t, r, b) from a location to the box sides, >= 0.
        target (Tensor[N, 4]): target distances (l, t, r, b), same units.
        loss_type (str): "iou" (-log IoU), "linear_iou" (1 - IoU) or "giou" (1 - GIoU).

    Returns:
        Tensor[N]: the loss of each location.
    """
    if loss_type not in LOSS_TYPES:
        raise NotImplementedError("IOULoss loss_type {!r} not in {}".format(loss_type, LOSS_TYPES))
    pred_l, pred_t, pred_r, pred_b = pred.unbind(dim=1)
    tgt_l, tgt_t, tgt_r, tgt_b = target.unbind(dim=1)

    pred_area = (pred_l + pred_r) * (pred_t + pred_b)
    target_area = (tgt_l + tgt_r) * (tgt_t + tgt_b)
    # both boxes contain the location, so overlap and enclosure are sums of per-side min / max
    w_inter = torch.min(pred_l, tgt_l) + torch.min(pred_r, tgt_r)
    h_inter = torch.min(pred_t, tgt_t) + torch.min(pred_b, tgt_b)
    area_inter = w_inter * h_inter
    area_union = pred_area + target_area - area_inter
    ious = (area_inter + 1.0) / (area_union + 1.0)

    if loss_type == "iou":
        return -torch.log(ious)
    if loss_type == "linear_iou":
        return 1 - ious
    w_enclose = torch.max(pred_l, tgt_l) + torch.max(pred_r, tgt_r)
    h_enclose = torch.max(pred_t, tgt_t) + torch.max(pred_b, tgt_b)
    area_enclose = w_enclose * h_enclose + 1e-7
    gious = ious - (area_enclose - area_union) / area_enclose
    return 1 - gious


def iou_loss(pred, target, weight=None, loss_type="iou"):
    """Summed IoU loss, weighted as the original FCOS.

    Arguments:
        pred, target (Tensor[N, 4]): (l, t, r, b) distances, see :func:`iou_loss_per_box`.
        weight (Tensor[N] or None): per-location weights (FCOS: the centerness targets).
        loss_type (str): "iou", "linear_iou" or "giou".

    Returns:
        Tensor[] : sum(loss * weight) when weight is given and sums to > 0, else sum(loss)
        (0 for N = 0).
    """
    losses = iou_loss_per_box(pred, target, loss_type)
    if weight is None:
        return losses.sum()
    # torch.where instead of `if weight.sum() > 0` keeps the GPU free of a host synchronisation
    return torch.where(weight.sum() > 0, (losses * weight).sum(), losses.sum())


class IOULoss(nn.Module):
    """The FCOS box regression loss (``fcos_core.layers.IOULoss`` of the original).

    forward(pred [N, 4], target [N, 4], weight [N] or None) -> scalar, see :func:`iou_loss`.
    """

    def __init__(self, loss_type="iou"):
        super(IOULoss, self).__init__()
        if loss_type not in LOSS_TYPES:
            raise NotImplementedError("IOULoss loss_type {!r} not in {}".format(loss_type, LOSS_TYPES))
        self.loss_type = loss_type

    def forward(self, pred, target, weight=None):
        return iou_loss(pred, target, weight, self.loss_type)

    def extra_repr(self):
        return "loss_type={!r}".format(self.loss_type)
