"""Target assignment on hand-computed cases (FCOS Sec. 3.1-3.2, center sampling of the imprv configs),
and the batched assignment against the per-image one on random batches."""
import pytest
import torch

from fcos_core.modeling.rpn.fcos.target_assignment import (
    DEFAULT_SIZE_RANGES,
    INF,
    assign_targets,
    assign_targets_batched,
    centerness_targets,
    compute_locations,
    compute_locations_per_level,
    inside_center_region,
    level_tensors,
    pad_ground_truth,
    size_ranges_from_boundaries,
)


def _single_level(points, stride=8, size_range=(-1, 64)):
    locations = torch.tensor(points, dtype=torch.float32)
    n = len(points)
    return locations, torch.full((n,), float(stride)), torch.tensor([size_range] * n, dtype=torch.float32)


def test_locations_follow_the_original_formula():
    loc = compute_locations_per_level(2, 3, 16)
    # cell (i, j) -> (j*s + s//2, i*s + s//2), row-major
    expected = [[8, 8], [24, 8], [40, 8], [8, 24], [24, 24], [40, 24]]
    assert loc.tolist() == expected
    levels = compute_locations([(2, 3), (1, 2)], [8, 16])
    assert [tuple(x.shape) for x in levels] == [(6, 2), (2, 2)]
    assert levels[0][0].tolist() == [4.0, 4.0]


def test_box_with_no_location_inside_gives_background():
    loc, stride, rng = _single_level([[4, 4], [12, 4], [4, 12], [12, 12]])
    boxes = torch.tensor([[5.0, 5.0, 11.0, 11.0]])  # between the location centres
    labels, reg, matched = assign_targets(loc, stride, rng, boxes, torch.tensor([3]))
    assert labels.tolist() == [0, 0, 0, 0]
    assert matched.tolist() == [-1, -1, -1, -1]


def test_location_on_box_edge_is_outside():
    # Strictly inside: a location on the left edge has l == 0 and is not assigned.
    loc, stride, rng = _single_level([[4, 4], [5, 5]])
    boxes = torch.tensor([[4.0, 0.0, 20.0, 20.0]])
    labels, reg, _ = assign_targets(loc, stride, rng, boxes, torch.tensor([2]))
    assert labels.tolist() == [0, 2]
    assert reg[1].tolist() == [1.0, 5.0, 15.0, 15.0]


def test_overlapping_boxes_go_to_the_smallest_area():
    loc, stride, rng = _single_level([[10, 10], [30, 10]])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 40.0, 20.0],  # big: area 41*21 with the legacy +1
            [5.0, 5.0, 15.0, 15.0],  # small, contains (10, 10) only
        ]
    )
    labels, reg, matched = assign_targets(loc, stride, rng, boxes, torch.tensor([1, 2]))
    assert labels.tolist() == [2, 1]
    assert matched.tolist() == [1, 0]
    assert reg[0].tolist() == [5.0, 5.0, 5.0, 5.0]
    assert reg[1].tolist() == [30.0, 10.0, 10.0, 10.0]


def test_equal_areas_go_to_the_first_box_and_legacy_area_decides():
    loc, stride, rng = _single_level([[10, 10]])
    same = torch.tensor([[0.0, 0.0, 20.0, 20.0], [1.0, 1.0, 21.0, 21.0]])
    labels, _, matched = assign_targets(loc, stride, rng, same, torch.tensor([4, 5]))
    assert matched.tolist() == [0] and labels.tolist() == [4]
    # 20.5 x 20 (legacy 21.5 * 21) is larger than 20 x 20.4 (21 * 21.4): the second wins.
    boxes = torch.tensor([[0.0, 0.0, 20.5, 20.0], [0.0, 0.0, 20.0, 20.4]])
    labels, _, matched = assign_targets(loc, stride, rng, boxes, torch.tensor([4, 5]))
    assert matched.tolist() == [1]


def test_box_on_the_image_border():
    loc, stride, rng = _single_level([[4, 4], [12, 4]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    labels, reg, _ = assign_targets(loc, stride, rng, boxes, torch.tensor([6]))
    assert labels.tolist() == [6, 0]
    assert reg[0].tolist() == [4.0, 4.0, 6.0, 6.0]


def test_size_range_boundaries_are_inclusive():
    loc = torch.tensor([[10.0, 10.0]] * 2)
    stride = torch.tensor([8.0, 16.0])
    rng = torch.tensor([[-1.0, 64.0], [64.0, 128.0]])
    # max(l, t, r, b) == 64 exactly: cared for on both levels
    boxes = torch.tensor([[5.0, 5.0, 74.0, 15.0]])
    labels, _, _ = assign_targets(loc, stride, rng, boxes, torch.tensor([1]))
    assert labels.tolist() == [1, 1]
    # just above 64: only the second level
    boxes = torch.tensor([[5.0, 5.0, 74.5, 15.0]])
    labels, _, _ = assign_targets(loc, stride, rng, boxes, torch.tensor([1]))
    assert labels.tolist() == [0, 1]
    # just below 64 (l=5 > -1): only the first
    boxes = torch.tensor([[5.0, 5.0, 73.5, 15.0]])
    labels, _, _ = assign_targets(loc, stride, rng, boxes, torch.tensor([1]))
    assert labels.tolist() == [1, 0]


def test_size_ranges_choose_the_level_on_a_real_pyramid():
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    strides = [8, 16, 32, 64, 128]
    locations = compute_locations(sizes, strides)
    stride, rng = level_tensors([len(x) for x in locations], strides, DEFAULT_SIZE_RANGES)
    all_loc = torch.cat(locations)
    boxes = torch.tensor([[0.0, 0.0, 200.0, 200.0]])  # centre location (96,96)/(80,80)... -> max dist ~ 100-196
    labels, reg, _ = assign_targets(all_loc, stride, rng, boxes, torch.tensor([1]))
    pos = labels > 0
    max_reg = reg[pos].max(dim=1).values
    lo, hi = rng[pos, 0], rng[pos, 1]
    assert pos.any()
    assert bool(((max_reg >= lo) & (max_reg <= hi)).all())
    # nothing on P3 (ranges up to 64 need a location within 64 px of every side of a 200 px box)
    assert not pos[: 64].any()


def test_sizes_of_interest_key_gives_the_level_ranges():
    import pytest

    from fcos_core.config import cfg
    from fcos_core.modeling.rpn.fcos.loss import make_fcos_loss_evaluator

    # the default key reproduces the paper's ranges exactly
    assert size_ranges_from_boundaries(cfg.MODEL.FCOS.SIZES_OF_INTEREST) == DEFAULT_SIZE_RANGES
    assert make_fcos_loss_evaluator(cfg).size_ranges == list(DEFAULT_SIZE_RANGES)
    # halved boundaries move the outer locations of a 60-pixel box from P3 to P4
    c = cfg.clone()
    c.merge_from_list(["MODEL.FCOS.SIZES_OF_INTEREST", [32, 64, 128, 256]])
    ranges = make_fcos_loss_evaluator(c).size_ranges
    assert ranges[:2] == [(-1, 32), (32, 64)] and ranges[-1] == (256, INF)
    sizes, strides = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], [8, 16, 32, 64, 128]
    locations = compute_locations(sizes, strides)
    all_loc = torch.cat(locations)
    boxes = torch.tensor([[20.0, 20.0, 80.0, 80.0]])  # max distance <= 60 everywhere inside
    levels = []
    for rngs in (DEFAULT_SIZE_RANGES, ranges):
        stride, rng = level_tensors([len(x) for x in locations], strides, rngs)
        labels, _, _ = assign_targets(all_loc, stride, rng, boxes, torch.tensor([1]))
        levels.append(set(stride[labels > 0].tolist()))
    assert levels[0] == {8.0} and 16.0 in levels[1]
    for bad in ([64, 64, 128, 256], [0, 64, 128, 256], [128, 64, 256, 512]):
        with pytest.raises(ValueError, match="SIZES_OF_INTEREST"):
            size_ranges_from_boundaries(bad)


def test_center_sampling_restricts_positives_to_the_centre():
    loc, stride, rng = _single_level([[4, 4], [20, 20], [36, 36]], stride=8, size_range=(-1, 1000))
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0]])  # centre (20, 20)
    labels_off, _, _ = assign_targets(loc, stride, rng, boxes, torch.tensor([1]), center_sampling_radius=0.0)
    assert labels_off.tolist() == [1, 1, 1]
    # radius 1.5 at stride 8: the square (8, 8)-(32, 32)
    labels_on, reg, _ = assign_targets(loc, stride, rng, boxes, torch.tensor([1]), center_sampling_radius=1.5)
    assert labels_on.tolist() == [0, 1, 0]
    # targets are still the distances to the whole box
    assert reg[1].tolist() == [20.0, 20.0, 20.0, 20.0]


def test_center_region_is_clipped_to_the_box():
    loc = torch.tensor([[3.0, 10.0], [1.0, 10.0]])
    stride = torch.tensor([8.0, 8.0])
    boxes = torch.tensor([[2.0, 0.0, 6.0, 20.0]])  # narrow: centre x 4, region x in (4-12, 4+12) clipped to (2, 6)
    inside = inside_center_region(loc, boxes, stride, radius=1.5)
    assert inside[:, 0].tolist() == [True, False]


def test_image_without_boxes():
    loc, stride, rng = _single_level([[4, 4], [12, 4]])
    labels, reg, matched = assign_targets(loc, stride, rng, torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64))
    assert labels.tolist() == [0, 0]
    assert reg.shape == (2, 4) and bool((reg == 0).all())
    assert matched.tolist() == [-1, -1]


def test_centerness_targets():
    reg = torch.tensor([[10.0, 10.0, 10.0, 10.0], [5.0, 10.0, 15.0, 10.0], [1.0, 2.0, 4.0, 8.0]])
    ctr = centerness_targets(reg)
    expected = [1.0, (5 / 15) ** 0.5, ((1 / 4) * (2 / 8)) ** 0.5]
    assert torch.allclose(ctr, torch.tensor(expected))
    assert INF > 1e7


# --- the batched assignment: bitwise the per-image one ------------------------------------------

PYRAMID_STRIDES = (8, 16, 32, 64, 128)


def _pyramid(height=256, width=320):
    sizes = [((height + s - 1) // s, (width + s - 1) // s) for s in PYRAMID_STRIDES]
    locations = compute_locations(sizes, PYRAMID_STRIDES)
    stride, rng = level_tensors([len(x) for x in locations], PYRAMID_STRIDES, DEFAULT_SIZE_RANGES)
    return torch.cat(locations), stride, rng


def _random_boxes(g, count, height=256, width=320):
    """``count`` boxes on a half-pixel grid (so that sides fall on location centres, max distances on
    the size-range ends, and areas tie), with duplicates, equal-area copies, tiny and degenerate
    boxes and boxes partly or wholly outside the image."""
    if count == 0:
        return torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64)
    x = torch.randint(-40, 2 * width, (count,), generator=g)
    y = torch.randint(-40, 2 * height, (count,), generator=g)
    xy = torch.stack((x, y), dim=1).float() / 2
    wh = torch.randint(0, 600, (count, 2), generator=g).float() / 2
    kind = torch.randint(0, 6, (count,), generator=g)
    wh[kind == 0] = torch.randint(0, 4, (int((kind == 0).sum()), 2), generator=g).float() / 2  # tiny, 0-wide
    boxes = torch.cat((xy, xy + wh), dim=1)
    boxes[kind == 1] += torch.tensor([width, height, width, height], dtype=torch.float32)  # outside
    for i in range(1, count):
        r = int(torch.randint(0, 4, (), generator=g))
        if r == 0:
            boxes[i] = boxes[int(torch.randint(0, i, (), generator=g))]  # duplicate
        elif r == 1:
            shift = torch.randint(-8, 9, (2,), generator=g).float() / 2  # equal area, moved
            boxes[i] = boxes[int(torch.randint(0, i, (), generator=g))] + shift.repeat(2)
    labels = torch.randint(1, 81, (count,), generator=g)
    return boxes, labels


def _per_image(locations, stride, rng, boxes_list, labels_list, radius):
    outs = [assign_targets(locations, stride, rng, b, l, radius) for b, l in zip(boxes_list, labels_list)]
    return tuple(torch.stack(parts) for parts in zip(*outs))


def _check_batched_equals_per_image(boxes_list, labels_list, radius, locations=None):
    locations, stride, rng = _pyramid() if locations is None else locations
    dtype = boxes_list[0].dtype
    gt_boxes, gt_labels, gt_valid = pad_ground_truth(boxes_list, labels_list, dtype=dtype)
    batched = assign_targets_batched(locations, stride, rng, gt_boxes, gt_labels, gt_valid, radius)
    expected = _per_image(locations, stride, rng, boxes_list, labels_list, radius)
    for name, b, e in zip(("labels", "reg_targets", "matched"), batched, expected):
        assert b.shape == e.shape and b.dtype == e.dtype, name
        assert torch.equal(b, e), name
    return batched


@pytest.mark.parametrize("radius", [0.0, 1.5])
@pytest.mark.parametrize("seed", range(6))
def test_batched_assignment_equals_per_image_on_random_batches(seed, radius):
    g = torch.Generator().manual_seed(seed)
    locations = _pyramid()
    counts = [0, 1, 7, 30, 0, 2] if seed % 2 == 0 else [30, 0, 1, 12]
    boxes_list, labels_list = zip(*[_random_boxes(g, c) for c in counts])
    labels, _, matched = _check_batched_equals_per_image(boxes_list, labels_list, radius, locations)
    assert (labels > 0).any(), "the random boxes should give some positives"
    # a padded slot never wins: every match indexes a real box of its image
    assert bool((matched < torch.tensor(counts)[:, None]).all())


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_batched_assignment_ties_padding_and_legacy_area(radius):
    # Image 0: one box, so its slots 1..2 are padding. Image 1: two boxes of equal legacy area
    # around the same locations (the first wins), then a smaller one in their corner (it wins
    # where it applies). Image 2: a 2 x 10 box and a 4.5 x 4.5 box around (12, 12): 20 < 20.25
    # without the +1, but 3 * 11 = 33 > 5.5 * 5.5 = 30.25 with it, so the second wins.
    # Image 3: one box of legacy area above INF, which the per-image code still assigns (on P7):
    # its padded slots must not undercut it with INF.
    boxes_list = [
        torch.tensor([[0.0, 0.0, 40.0, 40.0]]),
        torch.tensor([[0.0, 0.0, 40.0, 40.0], [0.5, 0.5, 40.5, 40.5], [2.0, 2.0, 14.0, 14.0]]),
        torch.tensor([[11.0, 4.0, 13.0, 14.0], [10.0, 10.0, 14.5, 14.5]]),
        torch.tensor([[-10000.0, -10000.0, 10000.0, 10000.0]]),
    ]
    labels_list = [torch.tensor([3]), torch.tensor([4, 5, 6]), torch.tensor([7, 8]), torch.tensor([1])]
    locations = _pyramid()
    labels, reg, matched = _check_batched_equals_per_image(boxes_list, labels_list, radius, locations)
    assert set(matched[0].tolist()) == {-1, 0}
    assert 1 not in matched[1].tolist() and {0, 2} <= set(matched[1].tolist())
    at_12 = int((locations[0] == 12).all(dim=1).nonzero()[0])  # (12, 12) on P3
    assert matched[2, at_12] == 1 and labels[2, at_12] == 8
    assert labels[3].any()
    # Whatever the padded slots hold (here a box around image 0's positives, of area below
    # every real one, and a valid label), they never win.
    gt_boxes, gt_labels, gt_valid = pad_ground_truth(boxes_list, labels_list)
    gt_boxes[0, 1:] = torch.tensor([2.0, 2.0, 38.0, 38.0])
    gt_labels[0, 1:] = 9
    again = assign_targets_batched(locations[0], locations[1], locations[2], gt_boxes, gt_labels, gt_valid, radius)
    for a, e in zip(again, (labels, reg, matched)):
        assert torch.equal(a, e)


def test_batched_assignment_without_boxes():
    empty = (torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64))
    for radius in (0.0, 1.5):
        # all images empty (M = 0), and empty images next to one with a box
        labels, reg, matched = _check_batched_equals_per_image([empty[0]] * 3, [empty[1]] * 3, radius)
        assert labels.shape == (3, reg.shape[1]) and not labels.any() and not reg.any()
        assert bool((matched == -1).all())
        boxes_list = [empty[0], torch.tensor([[10.0, 10.0, 60.0, 50.0]]), empty[0]]
        labels_list = [empty[1], torch.tensor([2]), empty[1]]
        labels, reg, _ = _check_batched_equals_per_image(boxes_list, labels_list, radius)
        assert labels[1].any() and not labels[0].any() and not reg[0].any() and not reg[2].any()


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_batched_assignment_with_mixed_dtypes(radius):
    # float64 boxes with float32 locations, and the other way round: promoted as per image
    # (stride and size ranges stay float32, as level_tensors gives them).
    g = torch.Generator().manual_seed(7)
    locations, stride, rng = _pyramid()
    boxes_list, labels_list = zip(*[_random_boxes(g, c) for c in (5, 0, 9)])
    for loc_dtype, box_dtype in ((torch.float32, torch.float64), (torch.float64, torch.float32)):
        loc = (locations.to(loc_dtype), stride, rng)
        boxes = [b.to(box_dtype) for b in boxes_list]
        labels, reg, _ = _check_batched_equals_per_image(boxes, labels_list, radius, loc)
        assert reg.dtype == torch.float64 and labels.any()
    # A float64 location 1e-300 inside a float32 box: inside in float64 (a float32 distance
    # would underflow to 0, on the edge, outside).
    loc = (torch.tensor([[1e-300, 5.0]], dtype=torch.float64), torch.tensor([8.0]), torch.tensor([[-1.0, 64.0]]))
    labels, _, _ = _check_batched_equals_per_image([torch.tensor([[0.0, 0.0, 10.0, 10.0]])], [torch.tensor([2])], radius, loc)
    assert labels.tolist() == [[2]]


def test_pad_ground_truth():
    boxes = [torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]), torch.zeros((0, 4)), torch.ones((1, 4))]
    labels = [torch.tensor([7, 8]), torch.zeros((0,), dtype=torch.int64), torch.tensor([9], dtype=torch.int32)]
    gt_boxes, gt_labels, gt_valid = pad_ground_truth(boxes, labels, dtype=torch.float64)
    assert gt_boxes.shape == (3, 2, 4) and gt_boxes.dtype == torch.float64
    assert gt_labels.dtype == torch.int64 and gt_valid.dtype == torch.bool
    assert gt_valid.tolist() == [[True, True], [False, False], [True, False]]
    assert gt_labels.tolist() == [[7, 8], [0, 0], [9, 0]]
    assert torch.equal(gt_boxes[0], boxes[0].double()) and torch.equal(gt_boxes[2, 0], torch.ones(4).double())
    assert not gt_boxes[1].any() and not gt_boxes[2, 1].any()
    gt_boxes, gt_labels, gt_valid = pad_ground_truth([torch.zeros((0, 4))] * 2, [torch.zeros((0,))] * 2)
    assert gt_boxes.shape == (2, 0, 4) and gt_labels.shape == gt_valid.shape == (2, 0)
    gt_boxes, gt_labels, gt_valid = pad_ground_truth([], [])
    assert gt_boxes.shape == (0, 0, 4) and gt_valid.shape == (0, 0)
