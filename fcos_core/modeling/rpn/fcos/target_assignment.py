"""FCOS target assignment: which ground-truth box, if any, each location regresses (Sec. 2.1-2.2).

Everything here is a pure tensor function, apart from the loss that consumes it. Conventions:
boxes are ``xyxy`` in pixels of the (resized, unpadded) input image; a location is the pixel
centre ``(x, y)`` that a feature-map cell maps back to (see :func:`compute_locations`);
regression targets are the distances ``(l, t, r, b)`` from the location to the box sides.
"""
import math

import torch

INF = 100000000

# FCOS Sec. 3 (multi-level prediction): a location on level P_i regresses a box only when
# max(l, t, r, b) lies in [m_{i-1}, m_i], with m = (0, 64, 128, 256, 512, inf). The original
# code uses -1 as the lower end of P3 and includes both ends of every range.
DEFAULT_SIZE_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))


def compute_locations_per_level(height, width, stride, device=None, dtype=torch.float32):
    """Image-plane centres of the cells of one feature map.

    Cell ``(i, j)`` of a level with stride ``s`` maps to ``(j * s + s // 2, i * s + s // 2)``
    (FCOS Sec. 2.1: ``(floor(s/2) + x s, floor(s/2) + y s)``).

    Returns:
        Tensor [height * width, 2]: ``(x, y)`` in row-major cell order.
    """
    shifts_x = torch.arange(0, width * stride, step=stride, dtype=dtype, device=device)
    shifts_y = torch.arange(0, height * stride, step=stride, dtype=dtype, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)), dim=1) + stride // 2


def compute_locations(feature_sizes, strides, device=None, dtype=torch.float32):
    """Locations of every level: a list of [H_l * W_l, 2] tensors, one per ``(H_l, W_l)``."""
    return [
        compute_locations_per_level(h, w, s, device=device, dtype=dtype)
        for (h, w), s in zip(feature_sizes, strides)
    ]


def flatten_level_outputs(outputs, channels):
    """Per-level head outputs [N, C, H_l, W_l] to one tensor [N, sum_l H_l W_l, C].

    Locations are ordered level by level, row-major within a level, matching
    :func:`compute_locations`.
    """
    n = outputs[0].shape[0]
    return torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1, channels) for o in outputs], dim=1)


def legacy_box_area(boxes):
    """Areas of ``xyxy`` boxes [M, 4] with the legacy +1 on widths and heights: [M]."""
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def centerness_targets(reg_targets):
    """Centerness of regression targets [P, 4] ``(l, t, r, b)`` (FCOS Eq. 3): [P].

    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.
    """
    left_right = reg_targets[:, [0, 2]]
    top_bottom = reg_targets[:, [1, 3]]
    ratio = (left_right.min(dim=-1).values / left_right.max(dim=-1).values) * (
        top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values
    )
    return torch.sqrt(ratio)


def level_tensors(num_points_per_level, strides, size_ranges, device=None):
    """Per-location stride [L] and size range [L, 2] from per-level values.

    Args:
        num_points_per_level: sequence of ints, H_l * W_l for each level.
        strides: one stride (pixels) per level.
        size_ranges: one (low, high) pair per level (pixels).
    """
    counts = torch.as_tensor(list(num_points_per_level), device=device)
    stride = torch.as_tensor([float(s) for s in strides], device=device).repeat_interleave(counts)
    ranges = torch.as_tensor([[float(lo), float(hi)] for lo, hi in size_ranges], device=device)
    return stride, ranges.repeat_interleave(counts, dim=0)


def inside_center_region(locations, gt_boxes, stride, radius):
    """Whether each location lies in each box's centre region (FCOS center sampling).

    The centre region of a box, seen from a location of stride ``s``, is the square of
    half-size ``radius * s`` around the box centre, clipped to the box.

    Args:
        locations: [L, 2] ``(x, y)``; gt_boxes: [M, 4] ``xyxy``; stride: [L]; radius: float.

    Returns:
        BoolTensor [L, M].
    """
    cx = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2
    cy = (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2
    half = (stride * radius)[:, None]
    x0 = torch.maximum(cx[None] - half, gt_boxes[None, :, 0])
    y0 = torch.maximum(cy[None] - half, gt_boxes[None, :, 1])
    x1 = torch.minimum(cx[None] + half, gt_boxes[None, :, 2])
    y1 = torch.minimum(cy[None] + half, gt_boxes[None, :, 3])
    xs = locations[:, 0:1]
    ys = locations[:, 1:2]
    dist = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys), dim=2)
    return dist.min(dim=2).values > 0


def assign_targets(locations, stride, size_range, gt_boxes, gt_labels, center_sampling_radius=0.0):
    """Assign every location of one image to a ground-truth box or to the background.

    A location is a candidate for a box when it lies strictly inside the box (or, with
    ``center_sampling_radius > 0``, inside the box's centre region) and the box's largest
    regression distance from it lies in the location's size range, both ends included.
    Among several candidate boxes it takes the one of smallest (legacy +1) area; equal
    areas go to the box listed first (FCOS Sec. 2.1, "ambiguous sample").

    Args:
        locations: [L, 2] ``(x, y)`` pixel centres.
        stride: [L] stride of each location's level (used by center sampling only).
        size_range: [L, 2] ``(low, high)`` of each location's level.
        gt_boxes: [M, 4] ``xyxy`` pixels; M may be 0.
        gt_labels: [M] int labels in 1..C.
        center_sampling_radius: 0 disables center sampling (the original default); the
            ``imprv`` configs use 1.5.

    Returns:
        labels: [L] int64, 0 for the background.
        reg_targets: [L, 4] ``(l, t, r, b)`` in pixels to the assigned box (to box 0 for
            background locations, as the original; 0 when there is no box).
        matched: [L] int64 index of the assigned box, -1 for the background.
    """
    num_loc = locations.shape[0]
    if gt_boxes.shape[0] == 0:
        return (
            torch.zeros(num_loc, dtype=torch.int64, device=locations.device),
            locations.new_zeros((num_loc, 4)),
            torch.full((num_loc,), -1, dtype=torch.int64, device=locations.device),
        )
    xs = locations[:, 0:1]
    ys = locations[:, 1:2]
    reg = torch.stack(
        (xs - gt_boxes[None, :, 0], ys - gt_boxes[None, :, 1], gt_boxes[None, :, 2] - xs, gt_boxes[None, :, 3] - ys),
        dim=2,
    )  # [L, M, 4]
    if center_sampling_radius > 0:
        inside = inside_center_region(locations, gt_boxes, stride, center_sampling_radius)
    else:
        inside = reg.min(dim=2).values > 0
    max_reg = reg.max(dim=2).values
    cared = (max_reg >= size_range[:, 0:1]) & (max_reg <= size_range[:, 1:2])
    area = legacy_box_area(gt_boxes)[None].expand(num_loc, -1)
    area = torch.where(inside & cared, area, area.new_full((), INF))
    min_area, matched = area.min(dim=1)
    background = min_area == INF
    labels = gt_labels.to(torch.int64)[matched]
    labels = labels.masked_fill(background, 0)
    reg_targets = reg[torch.arange(num_loc, device=locations.device), matched]
    matched = matched.masked_fill(background, -1)
    return labels, reg_targets, matched


def size_ranges_from_boundaries(boundaries):
    """Per-level (low, high) ranges from the boundaries m_1 < ... < m_{L-1} between levels
    (MODEL.FCOS.SIZES_OF_INTEREST): ((-1, m_1), (m_1, m_2), ..., (m_{L-1}, INF)), the original's
    convention (``DEFAULT_SIZE_RANGES`` for (64, 128, 256, 512))."""
    inner = [float(b) for b in boundaries]
    if any(b <= 0 for b in inner) or any(lo >= hi for lo, hi in zip(inner, inner[1:])):
        raise ValueError(f"MODEL.FCOS.SIZES_OF_INTEREST must be positive and increasing, got {list(boundaries)}")
    edges = [-1] + inner + [INF]
    return tuple(zip(edges[:-1], edges[1:]))


def check_size_ranges(size_ranges, num_levels):
    """Validate per-level size ranges: ``num_levels`` increasing (low, high) pairs."""
    if len(size_ranges) != num_levels:
        raise ValueError(f"need one size range per FPN level: got {len(size_ranges)} for {num_levels} levels")
    for lo, hi in size_ranges:
        if not (lo < hi) or math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"size range ({lo}, {hi}) is empty")
    return [tuple(r) for r in size_ranges]
