"""FCOS training losses (Sec. 3.1, Eq. 2, and Sec. 3.3 for centerness).

``loss_cls``: sigmoid focal loss over all locations, divided by the number of positives;
``loss_reg``: IoU loss over the positives, weighted by their centerness targets and divided
by the sum of those weights; ``loss_centerness``: binary cross-entropy of the centerness
prediction against its target over the positives, divided by the number of positives. In a
distributed run the number of positives and the centerness sum are summed over all processes
and divided by the world size, so every process normalises by the same number.
"""
import torch
from torch import nn

from fcos_core.layers.iou_loss import IOULoss
from fcos_core.layers.sigmoid_focal_loss import SigmoidFocalLoss
from fcos_core.utils.comm import get_world_size, reduce_sum

from .target_assignment import (
    DEFAULT_SIZE_RANGES,
    assign_targets_batched,
    centerness_targets,
    check_size_ranges,
    size_ranges_from_boundaries,
    flatten_level_outputs,
    level_tensors,
    pad_ground_truth,
)


class FCOSLossComputation:
    """Callable ``(locations, box_cls, box_regression, centerness, targets) -> (loss_cls, loss_reg, loss_centerness)``.

    Args:
        fpn_strides: stride of each level, e.g. (8, 16, 32, 64, 128).
        gamma, alpha: focal loss parameters (MODEL.FCOS.LOSS_GAMMA / LOSS_ALPHA).
        iou_loss_type: "iou", "linear_iou" or "giou" (MODEL.FCOS.IOU_LOSS_TYPE).
        center_sampling_radius: MODEL.FCOS.CENTER_SAMPLING_RADIUS (0 = off).
        norm_reg_targets: divide regression targets by the level's stride
            (MODEL.FCOS.NORM_REG_TARGETS; the head then predicts stride-normalised distances).
        size_ranges: per-level (low, high) range of max(l, t, r, b).
    """

    def __init__(
        self,
        fpn_strides,
        gamma=2.0,
        alpha=0.25,
        iou_loss_type="iou",
        center_sampling_radius=0.0,
        norm_reg_targets=False,
        size_ranges=DEFAULT_SIZE_RANGES,
    ):
        self.fpn_strides = list(fpn_strides)
        self.size_ranges = check_size_ranges(size_ranges, len(self.fpn_strides))
        self.center_sampling_radius = float(center_sampling_radius)
        self.norm_reg_targets = bool(norm_reg_targets)
        self.cls_loss_func = SigmoidFocalLoss(gamma, alpha)
        self.box_reg_loss_func = IOULoss(iou_loss_type)
        self.centerness_loss_func = nn.BCEWithLogitsLoss(reduction="sum")

    def prepare_targets(self, locations, targets):
        """Targets for a batch, locations flattened over levels.

        Args:
            locations: list over levels of [L_l, 2].
            targets: list over images of BoxList (``xyxy`` or convertible) with field "labels".

        Returns:
            labels [N, L] int64 (0 = background) and reg_targets [N, L, 4]; with
            ``norm_reg_targets`` the distances are divided by each location's stride.
        """
        all_locations = torch.cat(locations, dim=0)
        stride, size_range = level_tensors(
            [len(loc) for loc in locations], self.fpn_strides, self.size_ranges, device=all_locations.device
        )
        # One assignment for the whole batch: the images' boxes padded to the largest count.
        gt_boxes, gt_labels, gt_valid = pad_ground_truth(
            [target.convert("xyxy").bbox for target in targets],
            [target.get_field("labels") for target in targets],
            dtype=all_locations.dtype,
            device=all_locations.device,
        )
        labels, reg_targets, _ = assign_targets_batched(
            all_locations, stride, size_range, gt_boxes, gt_labels, gt_valid, self.center_sampling_radius
        )
        if self.norm_reg_targets:
            reg_targets = reg_targets / stride[None, :, None]
        return labels, reg_targets

    def __call__(self, locations, box_cls, box_regression, centerness, targets):
        num_classes = box_cls[0].shape[1]
        labels, reg_targets = self.prepare_targets(locations, targets)
        labels = labels.reshape(-1)
        reg_targets = reg_targets.reshape(-1, 4)
        cls_flat = flatten_level_outputs(box_cls, num_classes).reshape(-1, num_classes)
        reg_flat = flatten_level_outputs(box_regression, 4).reshape(-1, 4)
        ctr_flat = flatten_level_outputs(centerness, 1).reshape(-1)

        # The one host-device sync of the loss: gathering the positives needs their number.
        # The normalisers stay on the device (no .item()).
        pos_inds = torch.nonzero(labels > 0).squeeze(1)
        world = float(get_world_size())
        total_pos = reduce_sum(labels.new_full((1,), pos_inds.numel(), dtype=torch.float32))
        num_pos_avg = (total_pos / world).clamp(min=1.0)[0]

        loss_cls = self.cls_loss_func(cls_flat, labels) / num_pos_avg

        reg_pred = reg_flat[pos_inds]
        reg_targets = reg_targets[pos_inds]
        ctr_pred = ctr_flat[pos_inds]
        if pos_inds.numel() > 0:
            ctr_targets = centerness_targets(reg_targets)
            ctr_sum_avg = reduce_sum(ctr_targets.sum().detach()) / world
            loss_reg = self.box_reg_loss_func(reg_pred, reg_targets, ctr_targets) / ctr_sum_avg
            loss_ctr = self.centerness_loss_func(ctr_pred, ctr_targets) / num_pos_avg
        else:
            # Keep the graph connected so that every parameter gets a (zero) gradient, and
            # still take part in the collective so the other processes do not wait forever.
            reduce_sum(reg_flat.new_zeros(()))
            loss_reg = reg_pred.sum()
            loss_ctr = ctr_pred.sum()
        return loss_cls, loss_reg, loss_ctr


def make_fcos_loss_evaluator(cfg):
    """Build :class:`FCOSLossComputation` from the config (MODEL.FCOS.*)."""
    fcos = cfg.MODEL.FCOS
    return FCOSLossComputation(
        fpn_strides=fcos.FPN_STRIDES,
        gamma=fcos.LOSS_GAMMA,
        alpha=fcos.LOSS_ALPHA,
        iou_loss_type=fcos.IOU_LOSS_TYPE,
        center_sampling_radius=fcos.CENTER_SAMPLING_RADIUS,
        norm_reg_targets=fcos.NORM_REG_TARGETS,
        size_ranges=size_ranges_from_boundaries(fcos.SIZES_OF_INTEREST),
    )
