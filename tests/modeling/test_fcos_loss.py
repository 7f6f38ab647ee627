"""The FCOS loss keeps its normalisers on the device (no ``.item()``) and gives bitwise the losses
and gradients of the previous implementation (kept below as the reference), with and without
positives, center sampling and stride-normalised targets; the batched target assignment gives
bitwise the losses and gradients of the previous per-image one."""
import pytest
import torch

from fcos_core.modeling.rpn.fcos.loss import FCOSLossComputation, flatten_level_outputs
from fcos_core.modeling.rpn.fcos.target_assignment import (
    assign_targets,
    centerness_targets,
    compute_locations,
    level_tensors,
)
from fcos_core.structures.bounding_box import BoxList

STRIDES = (8, 16, 32, 64, 128)


def reference_loss(self, locations, box_cls, box_regression, centerness, targets):
    """The previous ``FCOSLossComputation.__call__`` (one process): normalisers via ``.item()``."""
    num_classes = box_cls[0].shape[1]
    labels, reg_targets = self.prepare_targets(locations, targets)
    labels = labels.reshape(-1)
    reg_targets = reg_targets.reshape(-1, 4)
    cls_flat = flatten_level_outputs(box_cls, num_classes).reshape(-1, num_classes)
    reg_flat = flatten_level_outputs(box_regression, 4).reshape(-1, 4)
    ctr_flat = flatten_level_outputs(centerness, 1).reshape(-1)
    pos_inds = torch.nonzero(labels > 0).squeeze(1)
    num_pos_avg = max(float(pos_inds.numel()), 1.0)
    loss_cls = self.cls_loss_func(cls_flat, labels) / num_pos_avg
    reg_pred, reg_targets, ctr_pred = reg_flat[pos_inds], reg_targets[pos_inds], ctr_flat[pos_inds]
    if pos_inds.numel() > 0:
        ctr_targets = centerness_targets(reg_targets)
        ctr_sum_avg = ctr_targets.sum().detach().item()
        loss_reg = self.box_reg_loss_func(reg_pred, reg_targets, ctr_targets) / ctr_sum_avg
        loss_ctr = self.centerness_loss_func(ctr_pred, ctr_targets) / num_pos_avg
    else:
        loss_reg, loss_ctr = reg_pred.sum(), ctr_pred.sum()
    return loss_cls, loss_reg, loss_ctr


def inputs(boxes_per_image, seed=0, padded=(96, 128), num_classes=4):
    g = torch.Generator().manual_seed(seed)
    n = len(boxes_per_image)
    sizes = [((padded[0] + s - 1) // s, (padded[1] + s - 1) // s) for s in STRIDES]
    box_cls = [torch.randn(n, num_classes, h, w, generator=g).requires_grad_() for h, w in sizes]
    box_reg = [(torch.rand(n, 4, h, w, generator=g) * 40 + 1).requires_grad_() for h, w in sizes]
    ctr = [torch.randn(n, 1, h, w, generator=g).requires_grad_() for h, w in sizes]
    targets = []
    for boxes in boxes_per_image:
        t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), (padded[1], padded[0]), mode="xyxy")
        t.add_field("labels", torch.arange(1, len(boxes) + 1) % num_classes + 1)
        targets.append(t)
    return compute_locations(sizes, STRIDES), box_cls, box_reg, ctr, targets


def losses_and_grads(fn, loss, args):
    for group in args[1:4]:
        for t in group:
            t.grad = None
    values = fn(loss, *args)
    sum(values).backward()
    grads = [t.grad.clone() for group in args[1:4] for t in group]
    return [v.detach() for v in values], grads


@pytest.mark.parametrize("radius,norm_reg,iou", [(0.0, False, "iou"), (1.5, True, "giou")])
@pytest.mark.parametrize("boxes", [
    [[[10, 12, 60, 70], [4, 4, 30, 90], [50, 20, 127, 95]], []],
    [[], []],
], ids=["positives", "no_boxes"])
def test_loss_equals_the_previous_implementation(radius, norm_reg, iou, boxes):
    loss = FCOSLossComputation(STRIDES, iou_loss_type=iou, center_sampling_radius=radius, norm_reg_targets=norm_reg)
    args = inputs(boxes)
    expected, expected_grads = losses_and_grads(reference_loss, loss, args)
    actual, actual_grads = losses_and_grads(FCOSLossComputation.__call__, loss, args)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape == () and a.dtype == e.dtype == torch.float32
        assert torch.equal(a, e)
    for a, e in zip(actual_grads, expected_grads):
        assert torch.equal(a, e)


def per_image_prepare_targets(self, locations, targets):
    """The previous ``FCOSLossComputation.prepare_targets``: one :func:`assign_targets` per image."""
    all_locations = torch.cat(locations, dim=0)
    stride, size_range = level_tensors(
        [len(loc) for loc in locations], self.fpn_strides, self.size_ranges, device=all_locations.device
    )
    labels, reg_targets = [], []
    for target in targets:
        boxes = target.convert("xyxy").bbox.to(all_locations.dtype)
        lab, reg, _ = assign_targets(
            all_locations, stride, size_range, boxes, target.get_field("labels"), self.center_sampling_radius
        )
        labels.append(lab)
        reg_targets.append(reg)
    labels, reg_targets = torch.stack(labels), torch.stack(reg_targets)
    if self.norm_reg_targets:
        reg_targets = reg_targets / stride[None, :, None]
    return labels, reg_targets


@pytest.mark.parametrize("radius,norm_reg,iou", [(0.0, False, "iou"), (1.5, True, "giou"), (1.5, False, "linear_iou")])
@pytest.mark.parametrize("boxes", [
    [[[10, 12, 60, 70], [4, 4, 30, 90], [50, 20, 127, 95]], [], [[0, 0, 127, 95]]],
    [[[10, 12, 60, 70], [10, 12, 60, 70], [11, 13, 61, 71], [-20, -20, 5, 5], [30, 30, 30.5, 31]], [[40, 8, 120, 60]]],
    [[], []],
], ids=["mixed", "ties_outside_tiny", "no_boxes"])
def test_batched_targets_give_the_per_image_losses(monkeypatch, radius, norm_reg, iou, boxes):
    loss = FCOSLossComputation(STRIDES, iou_loss_type=iou, center_sampling_radius=radius, norm_reg_targets=norm_reg)
    args = inputs(boxes, seed=3)
    batched_targets = loss.prepare_targets(args[0], args[4])
    actual, actual_grads = losses_and_grads(FCOSLossComputation.__call__, loss, args)
    monkeypatch.setattr(FCOSLossComputation, "prepare_targets", per_image_prepare_targets)
    for a, e in zip(batched_targets, loss.prepare_targets(args[0], args[4])):
        assert a.dtype == e.dtype and torch.equal(a, e)
    expected, expected_grads = losses_and_grads(FCOSLossComputation.__call__, loss, args)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)
    for a, e in zip(actual_grads, expected_grads):
        assert torch.equal(a, e)
