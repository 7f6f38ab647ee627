"""Target assignment on hand-computed cases (FCOS Sec. 2.1-2.2, center sampling of the imprv configs)."""
import torch

from fcos_core.modeling.rpn.fcos.target_assignment import (
    DEFAULT_SIZE_RANGES,
    INF,
    assign_targets,
    centerness_targets,
    compute_locations,
    compute_locations_per_level,
    inside_center_region,
    level_tensors,
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
