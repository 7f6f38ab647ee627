"""FCOS target assignment: which ground-truth box, if any, each location regresses (Sec. 3.1-3.2).

Everything here is a pure tensor function, apart from the loss that consumes it. Conventions:
boxes are ``xyxy`` in pixels of the (resized, unpadded) input image; a location is the pixel
centre ``(x, y)`` that a feature-map cell maps back to (see :func:`compute_locations`);
regression targets are the distances ``(l, t, r, b)`` from the location to the box sides.
"""
import math

import torch

INF = 100000000

# FCOS Sec. 3.2 (multi-level prediction): a location on level P_i regresses a box only when
# max(l, t, r, b) lies in [m_{i-1}, m_i], with m = (0, 64, 128, 256, 512, inf). The original
# code uses -1 as the lower end of P3 and includes both ends of every range.
DEFAULT_SIZE_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))


def compute_locations_per_level(height, width, stride, device=None, dtype=torch.float32):
    """Image-plane centres of the cells of one feature map.

    Cell ``(i, j)`` of a level with stride ``s`` maps to ``(j * s + s // 2, i * s + s // 2)``
    (FCOS Sec. 3.1: ``(floor(s/2) + x s, floor(s/2) + y s)``).

    Returns:
        Tensor [height * width, 2]: ``(x, y)`` in row-major cell order.
    """
    shifts_x = torch.arange(0, width * stride, step=stride, dtype=dtype, device=device)
    shifts_y = torch.arange(0, height * stride, step=stride, dtype=dtype, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)), dim=1) + stride // 2


def torchvision_locations_per_level(height, width, padded_size, device=None, dtype=torch.float32):
    """Centres of torchvision FCOS's anchors on one feature map of ``height`` x ``width`` cells.

    torchvision's ``AnchorGenerator`` takes the stride per axis from the padded batch,
    ``(H_pad // height, W_pad // width)``, and puts cell ``(i, j)`` at ``(j * stride_x, i *
    stride_y)``: no half-stride offset, and on P6/P7 a stride that is not 64/128 when the padded
    size is not a multiple of 128 (H_pad 800 gives a P6 grid of 13 and a stride of 61).

    Args:
        height, width: the feature map's size in cells.
        padded_size: (H_pad, W_pad), the padded batch tensor's size in pixels.
        All four sizes are ints, or (while exporting to ONNX) traced int64 0-dim tensors, whose
        integer division then happens in the graph.

    Returns:
        Tensor [height * width, 2]: ``(x, y)`` in pixels, row-major cell order.
    """
    stride_y, stride_x = padded_size[0] // height, padded_size[1] // width
    shifts_x = torch.arange(0, width, dtype=torch.int64, device=device) * stride_x
    shifts_y = torch.arange(0, height, dtype=torch.int64, device=device) * stride_y
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)), dim=1).to(dtype)


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
    areas go to the box listed first (FCOS Sec. 3.1, "ambiguous sample").

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


def inside_center_region_batched(locations, gt_boxes, stride, radius):
    """:func:`inside_center_region` for the padded boxes of a batch, boxes before locations.

    The same elementwise operations, so the same values: ``[n, m, l]`` here is ``[l, m]`` of
    :func:`inside_center_region` for image ``n``'s boxes. The test "min of the four distances
    > 0" is written as four comparisons joined by ``&``, which is the same (NaN included).

    Args:
        locations: [L, 2] ``(x, y)``; gt_boxes: [N, M, 4] ``xyxy``; stride: [L]; radius: float.

    Returns:
        BoolTensor [N, M, L].
    """
    xs, ys = locations[:, 0], locations[:, 1]  # [L]
    cx = ((gt_boxes[..., 0] + gt_boxes[..., 2]) / 2)[..., None]  # [N, M, 1]
    cy = ((gt_boxes[..., 1] + gt_boxes[..., 3]) / 2)[..., None]
    half = stride * radius  # [L]
    # One [N, M, L] buffer, in place, holds each side of the region in turn, then the
    # location's distance to it: x0 = max(cx - half, x_min), then xs - x0; and so on. It has
    # the dtype that the distances are promoted to (each operation computes in its inputs'
    # common dtype, as out of place, and the upcast to the buffer's is exact).
    buf = (cx - half).to(torch.promote_types(torch.result_type(cx, half), locations.dtype))
    torch.maximum(buf, gt_boxes[..., 0:1], out=buf)
    inside = torch.sub(xs, buf, out=buf) > 0
    torch.sub(cy, half, out=buf)
    torch.maximum(buf, gt_boxes[..., 1:2], out=buf)
    inside &= torch.sub(ys, buf, out=buf) > 0
    torch.add(cx, half, out=buf)
    torch.minimum(buf, gt_boxes[..., 2:3], out=buf)
    inside &= torch.sub(buf, xs, out=buf) > 0
    torch.add(cy, half, out=buf)
    torch.minimum(buf, gt_boxes[..., 3:4], out=buf)
    inside &= torch.sub(buf, ys, out=buf) > 0
    return inside


def pad_ground_truth(boxes_per_image, labels_per_image, dtype=torch.float32, device=None):
    """Stack per-image boxes and labels into padded batch tensors with a validity mask.

    Image ``i``'s boxes fill slots ``0 .. M_i - 1`` in their order, so a slot index is the
    box's index in its image; the padded slots hold zeros and are marked invalid. The mask
    is built on the host, so padding needs no host-device synchronisation.

    Args:
        boxes_per_image: list over N images of [M_i, 4] ``xyxy`` boxes; M_i may be 0.
        labels_per_image: list over N images of [M_i] int labels.
        dtype: dtype of the padded boxes.
        device: device of the results (default: that of the first image's boxes, else CPU).

    Returns:
        gt_boxes: [N, M, 4] with M = max_i M_i (0 when no image has a box).
        gt_labels: [N, M] int64.
        gt_valid: [N, M] bool, True in the slots of real boxes.
    """
    if device is None:
        device = boxes_per_image[0].device if len(boxes_per_image) > 0 else torch.device("cpu")
    counts = torch.tensor([int(b.shape[0]) for b in boxes_per_image], dtype=torch.int64)
    n = counts.numel()
    m = int(counts.max()) if n > 0 else 0
    valid = torch.arange(m)[None, :] < counts[:, None]  # [N, M], on the host
    gt_boxes = torch.zeros((n, m, 4), dtype=dtype, device=device)
    gt_labels = torch.zeros((n, m), dtype=torch.int64, device=device)
    if m > 0:
        slots = valid.reshape(-1).nonzero().squeeze(1).to(device)
        gt_boxes.view(n * m, 4)[slots] = torch.cat(list(boxes_per_image)).to(device=device, dtype=dtype)
        gt_labels.view(n * m)[slots] = torch.cat(list(labels_per_image)).to(device=device, dtype=torch.int64)
    return gt_boxes, gt_labels, valid.to(device)


def assign_targets_batched(
    locations, stride, size_range, gt_boxes, gt_labels, gt_valid, center_sampling_radius=0.0
):
    """:func:`assign_targets` for a whole batch at once, over all images and levels together.

    The same rules (FCOS Sec. 3.1-3.2): a location is a candidate for a box when it lies
    strictly inside the box (or inside its centre region with center sampling) and the box's
    largest regression distance lies in the location's size range (FCOS Sec. 3.2,
    multi-level prediction), both ends included; the candidate of smallest legacy (+1) area
    wins, the first listed among equal areas (FCOS Sec. 3.1, "ambiguous sample").

    The results are bitwise those of :func:`assign_targets` image by image: every value comes
    from the same elementwise float operations on the same operands, and minima and maxima
    are exact. The work is laid out as [N, M, L] (locations innermost) with the four distances
    kept apart rather than stacked, which is what makes it faster than the per-image loop on
    a CPU. Padded slots get an area of +inf, above every real box's value (the
    non-candidates' ``INF`` included), and come after the real slots, so a padded box never
    wins and the first-index tie-break among an image's boxes is unchanged.

    Args:
        locations: [L, 2] ``(x, y)`` pixel centres (shared by all images).
        stride: [L] stride of each location's level (used by center sampling only).
        size_range: [L, 2] ``(low, high)`` of each location's level.
        gt_boxes: [N, M, 4] ``xyxy`` pixels, padded (see :func:`pad_ground_truth`); M may be 0.
        gt_labels: [N, M] int labels in 1..C (any value in padded slots).
        gt_valid: [N, M] bool, False in padded slots.
        center_sampling_radius: 0 disables center sampling.

    Returns:
        labels: [N, L] int64, 0 for the background.
        reg_targets: [N, L, 4] ``(l, t, r, b)`` to the assigned box (to the image's box 0 for
            background locations; 0 in images without boxes).
        matched: [N, L] int64 index of the assigned box within its image, -1 for the background.
    """
    n, m = gt_boxes.shape[:2]
    num_loc = locations.shape[0]
    device = locations.device
    if m == 0:
        return (
            torch.zeros((n, num_loc), dtype=torch.int64, device=device),
            locations.new_zeros((n, num_loc, 4)),
            torch.full((n, num_loc), -1, dtype=torch.int64, device=device),
        )
    xs, ys = locations[:, 0], locations[:, 1]  # [L]
    # The distances (l, t, r, b) one at a time into one [N, M, L] buffer, folded in place into
    # their maximum and (without center sampling) into "all four > 0": few large temporaries.
    center_sampling = center_sampling_radius > 0
    max_reg = xs - gt_boxes[..., 0:1]  # l
    inside = None if center_sampling else max_reg > 0
    dist = torch.empty_like(max_reg)
    for a, b in ((ys, gt_boxes[..., 1:2]), (gt_boxes[..., 2:3], xs), (gt_boxes[..., 3:4], ys)):  # t, r, b
        torch.sub(a, b, out=dist)
        if not center_sampling:
            inside &= dist > 0
        torch.maximum(max_reg, dist, out=max_reg)
    del dist
    if center_sampling:
        inside = inside_center_region_batched(locations, gt_boxes, stride, center_sampling_radius)
    candidate = inside
    candidate &= max_reg >= size_range[:, 0]  # the size range of the location's level
    candidate &= max_reg <= size_range[:, 1]
    # Per slot: the box's area where it is a candidate, else INF for a real box, +inf for padding.
    area = legacy_box_area(gt_boxes.reshape(-1, 4)).reshape(n, m)
    invalid = ~gt_valid
    area = area.masked_fill(invalid, float("inf"))
    not_candidate = area.new_full((n, m), INF).masked_fill(invalid, float("inf"))
    reuse = max_reg if max_reg.dtype == area.dtype else None
    area = torch.where(candidate, area[..., None], not_candidate[..., None], out=reuse)  # [N, M, L]
    min_area, matched = area.min(dim=1)  # [N, L]; the first index among equal minima
    has_boxes = gt_valid.any(dim=1)  # [N]
    background = (min_area == INF) | ~has_boxes[:, None]
    labels = torch.gather(gt_labels.to(torch.int64), 1, matched).masked_fill(background, 0)
    box = torch.gather(gt_boxes, 1, matched[..., None].expand(n, num_loc, 4))  # [N, L, 4]
    reg_targets = torch.stack(
        (xs - box[..., 0], ys - box[..., 1], box[..., 2] - xs, box[..., 3] - ys), dim=2
    ).masked_fill(~has_boxes[:, None, None], 0)
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
