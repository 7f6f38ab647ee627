"""FCOS post-processing (modeling/rpn/fcos/inference.py), batched over images and levels, against
the per-image, per-level implementation it replaced (kept below as the reference): identical boxes,
scores and labels, with the pre-NMS top-k, INFERENCE_TH, class-aware NMS and the post-NMS top-n
(ties kept) all active."""
import pytest
import torch

from fcos_core.modeling.rpn.fcos.inference import FCOSPostProcessor, rank_within_groups, top_n_with_ties
from fcos_core.modeling.rpn.fcos.target_assignment import compute_locations
from fcos_core.structures.bounding_box import BoxList
from fcos_core.structures.boxlist_ops import boxlist_ml_nms, cat_boxlist, remove_small_boxes

STRIDES = (8, 16, 32, 64, 128)


# ---------------------------------------------------------------- the previous implementation
def _ref_select_candidates(cls_prob, centerness_prob, pre_nms_thresh, pre_nms_top_n):
    candidates = cls_prob > pre_nms_thresh
    score = cls_prob * centerness_prob[:, None]
    loc_idx, class_idx = candidates.nonzero(as_tuple=True)
    score = score[loc_idx, class_idx]
    if score.numel() > pre_nms_top_n:
        score, top = score.topk(pre_nms_top_n, sorted=False)
        loc_idx = loc_idx[top]
        class_idx = class_idx[top]
    return loc_idx, class_idx, score


def _ref_single_level(p, locations, box_cls, box_regression, centerness, image_sizes):
    n, c, _, _ = box_cls.shape
    cls_prob = box_cls.permute(0, 2, 3, 1).reshape(n, -1, c).sigmoid()
    distances = box_regression.permute(0, 2, 3, 1).reshape(n, -1, 4)
    ctr_prob = centerness.permute(0, 2, 3, 1).reshape(n, -1).sigmoid()
    results = []
    for i in range(n):
        loc_idx, class_idx, score = _ref_select_candidates(cls_prob[i], ctr_prob[i], p.pre_nms_thresh, p.pre_nms_top_n)
        loc = locations[loc_idx]
        dist = distances[i, loc_idx]
        boxes = torch.cat((loc - dist[:, :2], loc + dist[:, 2:]), dim=1)
        h, w = image_sizes[i]
        boxlist = BoxList(boxes, (int(w), int(h)), mode="xyxy")
        boxlist.add_field("labels", class_idx + 1)
        boxlist.add_field("scores", torch.sqrt(score))
        boxlist = boxlist.clip_to_image(remove_empty=False)
        results.append(remove_small_boxes(boxlist, p.min_size))
    return results


def _ref_select_over_all_levels(p, boxlists):
    results = []
    for boxlist in boxlists:
        result = boxlist_ml_nms(boxlist, p.nms_thresh)
        num = len(result)
        if num > p.fpn_post_nms_top_n > 0:
            scores = result.get_field("scores")
            thresh, _ = torch.kthvalue(scores.cpu(), num - p.fpn_post_nms_top_n + 1)
            keep = torch.nonzero(scores >= thresh.item()).squeeze(1)
            result = result[keep]
        results.append(result)
    return results


def reference(p, locations, box_cls, box_regression, centerness, image_sizes):
    per_level = [
        _ref_single_level(p, loc, cls, reg, ctr, image_sizes)
        for loc, cls, reg, ctr in zip(locations, box_cls, box_regression, centerness)
    ]
    per_image = [cat_boxlist(list(b)) for b in zip(*per_level)]
    return _ref_select_over_all_levels(p, per_image)


# ---------------------------------------------------------------- helpers
def head_outputs(image_sizes, num_classes, seed, cls_bias=-2.0, padded=(128, 160)):
    """Random head outputs for a batch padded to ``padded`` (H, W): logits, distances, centerness."""
    g = torch.Generator().manual_seed(seed)
    n = len(image_sizes)
    sizes = [((padded[0] + s - 1) // s, (padded[1] + s - 1) // s) for s in STRIDES]
    box_cls = [torch.randn(n, num_classes, h, w, generator=g) * 2 + cls_bias for h, w in sizes]
    box_reg = [torch.exp(torch.randn(n, 4, h, w, generator=g)) * s * 2 for (h, w), s in zip(sizes, STRIDES)]
    ctr = [torch.randn(n, 1, h, w, generator=g) for h, w in sizes]
    return compute_locations(sizes, STRIDES), box_cls, box_reg, ctr


def assert_identical(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.size == e.size and a.mode == e.mode == "xyxy"
        assert torch.equal(a.bbox, e.bbox)
        assert torch.equal(a.get_field("scores"), e.get_field("scores"))
        assert torch.equal(a.get_field("labels"), e.get_field("labels"))
        assert sorted(a.fields()) == sorted(e.fields())


def canonical(boxlists):
    """The BoxLists with their detections sorted by (score, label, box): for comparing sets."""
    out = []
    for b in boxlists:
        keys = torch.cat((b.get_field("scores")[:, None], b.get_field("labels")[:, None].float(), b.bbox), dim=1)
        order = torch.arange(len(b))
        for col in reversed(range(keys.shape[1])):  # lexicographic by repeated stable sorts
            order = order[torch.argsort(keys[order, col], stable=True)]
        out.append(b[order])
    return out


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize(
    "pre_nms_top_n,post_top_n,nms_thresh,min_size",
    [(1000, 100, 0.6, 0), (40, 30, 0.6, 0), (40, 0, 0.6, 0), (40, 30, 0.0, 0), (1000, 50, 0.5, 20)],
    ids=["defaults", "both_cuts", "no_post_cut", "no_nms", "min_size"],
)
def test_batched_equals_per_image_per_level(pre_nms_top_n, post_top_n, nms_thresh, min_size):
    image_sizes = [(128, 160), (100, 150), (64, 90)]
    inputs = head_outputs(image_sizes, num_classes=6, seed=0)
    p = FCOSPostProcessor(0.05, pre_nms_top_n, nms_thresh, post_top_n, min_size, num_classes=7)
    expected = reference(p, *inputs, image_sizes)
    assert sum(len(e) for e in expected) > 0
    if post_top_n:
        assert all(len(e) >= post_top_n for e in expected)  # the cut is exercised
    actual = p(*inputs, image_sizes)
    if nms_thresh <= 0:
        # without NMS the order is the candidates' order, which the reference left to topk
        actual, expected = canonical(actual), canonical(expected)
    assert_identical(actual, expected)


def test_high_threshold_and_an_image_without_candidates():
    image_sizes = [(128, 160), (64, 64)]
    locations, box_cls, box_reg, ctr = head_outputs(image_sizes, num_classes=3, seed=1)
    for cls in box_cls:
        cls[1] = -20.0  # nothing above any threshold in image 1
    p = FCOSPostProcessor(0.5, 1000, 0.6, 100, 0, num_classes=4)
    expected = reference(p, locations, box_cls, box_reg, ctr, image_sizes)
    actual = p(locations, box_cls, box_reg, ctr, image_sizes)
    assert len(expected[1]) == 0 and len(expected[0]) > 0
    assert_identical(actual, expected)
    assert actual[1].bbox.shape == (0, 4) and actual[1].get_field("labels").dtype == torch.int64
    nothing = FCOSPostProcessor(1.0, 1000, 0.6, 100, 0, num_classes=4)
    assert [len(b) for b in nothing(locations, box_cls, box_reg, ctr, image_sizes)] == [0, 0]


def test_ties_at_the_post_nms_cut_are_kept():
    image_sizes = [(128, 160)]
    locations, box_cls, box_reg, ctr = head_outputs(image_sizes, num_classes=2, seed=2)
    for cls, c in zip(box_cls, ctr):
        cls.fill_(-10.0)
        cls[0, 0, 1::3, 1::3] = 1.0  # many equal scores, boxes far apart enough to survive NMS
        c.fill_(0.0)
    for reg in box_reg:
        reg.fill_(2.0)
    p = FCOSPostProcessor(0.05, 1000, 0.6, 5, 0, num_classes=3)
    expected = reference(p, locations, box_cls, box_reg, ctr, image_sizes)
    actual = p(locations, box_cls, box_reg, ctr, image_sizes)
    assert len(expected[0]) > 5  # all tied at the 5th score
    assert_identical(actual, expected)


def test_select_over_all_levels_of_merged_boxlists():
    """The entry point of test-time augmentation: BoxLists in, NMS and the top-n per image."""
    g = torch.Generator().manual_seed(3)
    boxlists = []
    for n, (w, h) in zip((60, 0, 25), ((160, 128), (90, 64), (150, 100))):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(n, 2, generator=g) * 40 + 2
        b = BoxList(torch.cat((xy, xy + wh), dim=1), (w, h), mode="xyxy")
        b.add_field("scores", torch.rand(n, generator=g))
        b.add_field("labels", torch.randint(1, 4, (n,), generator=g))
        boxlists.append(b)
    p = FCOSPostProcessor(0.05, 1000, 0.5, 10, 0, num_classes=4)
    assert_identical(p.select_over_all_levels(boxlists), _ref_select_over_all_levels(p, boxlists))


def test_reduced_precision_head_outputs_give_float32_detections():
    image_sizes = [(128, 160)]
    inputs = head_outputs(image_sizes, num_classes=3, seed=4)
    p = FCOSPostProcessor(0.05, 1000, 0.6, 100, 0, num_classes=4)
    half = [[t.to(torch.bfloat16) for t in level] for level in inputs[1:]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = p(inputs[0], *half, image_sizes)[0]
    assert out.bbox.dtype == torch.float32 and out.get_field("scores").dtype == torch.float32
    upcast = [[t.float() for t in level] for level in half]
    assert_identical([out], reference(p, inputs[0], *upcast, image_sizes))


def test_rank_and_top_n_within_groups():
    group = torch.tensor([1, 0, 1, 1, 0, 2])
    score = torch.tensor([0.5, 0.9, 0.7, 0.5, 0.1, 0.3])
    assert rank_within_groups(group, score, 3).tolist() == [1, 0, 0, 2, 1, 0]
    # group 1 has 0.7, 0.5, 0.5: the 2nd best is 0.5 and both 0.5 are kept
    assert top_n_with_ties(group, score, 3, 2).tolist() == [True, True, True, True, True, True]
    assert top_n_with_ties(group, score, 3, 1).tolist() == [False, True, True, False, False, True]
