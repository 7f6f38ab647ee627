"""nms / ml_nms: compiled kernels against the pure-PyTorch references and torchvision."""
import importlib
import warnings

import pytest
import torch
import torchvision

from fcos_core.layers import _extension
from fcos_core.layers.nms import ml_nms, ml_nms_reference, nms, nms_reference

# The module itself (fcos_core.layers re-exports a function under the same name).
nms_module = importlib.import_module("fcos_core.layers.nms")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_cpu_kernels = pytest.mark.skipif(
    not (_extension.has_kernel("nms", "cpu") and _extension.has_kernel("ml_nms", "cpu")),
    reason="fcos_core._C has no CPU nms kernels (build it: pip install --no-build-isolation -e .)",
)


def make_detections(n, num_classes=5, seed=0, dtype=torch.float32, image=(1333.0, 800.0)):
    """Realistic boxes: random centres in an 800x1333 image, sides 10-300 px; random scores."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor(image, dtype=torch.float64)
    sizes = torch.rand(n, 2, generator=g, dtype=torch.float64) * 290 + 10
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], 1).to(dtype)
    scores = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(1, num_classes + 1, (n,), generator=g)
    return boxes, scores, labels


def clustered_detections(n, seed=0, dtype=torch.float32):
    """Boxes jittered around a few objects, so that many overlap (lots of suppression)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[10.0, 10.0, 110.0, 90.0], [50.0, 40.0, 160.0, 170.0], [300.0, 200.0, 340.0, 260.0]])
    idx = torch.randint(0, 3, (n,), generator=g)
    boxes = base[idx] + torch.randn(n, 4, generator=g) * 8
    return boxes.to(dtype), torch.rand(n, generator=g).to(dtype), torch.randint(0, 3, (n,), generator=g)


# ------------------------------------------------------------------------------------------ CPU


@needs_cpu_kernels
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("legacy", [True, False])
def test_nms_matches_reference(seed, dtype, legacy):
    for boxes, scores, _ in (make_detections(300, seed=seed, dtype=dtype), clustered_detections(200, seed, dtype)):
        for thresh in (0.3, 0.6):
            expected = nms_reference(boxes, scores, thresh, legacy)
            got = nms(boxes, scores, thresh, legacy)
            assert got.dtype == torch.int64
            assert torch.equal(got, expected)


@needs_cpu_kernels
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("legacy", [True, False])
def test_ml_nms_matches_reference_int_and_float_labels(seed, dtype, legacy):
    for boxes, scores, labels in (make_detections(300, 4, seed, dtype), clustered_detections(200, seed, dtype)):
        expected = ml_nms_reference(boxes, scores, labels, 0.5, legacy)
        assert torch.equal(ml_nms(boxes, scores, labels, 0.5, legacy), expected)
        assert torch.equal(ml_nms(boxes, scores, labels.float(), 0.5, legacy), expected)
        assert torch.equal(ml_nms(boxes, scores, labels.int(), 0.5, legacy), expected)


@needs_cpu_kernels
def test_ml_nms_large_input_parallel_path():
    # 6,000 boxes of 2 classes: enough pairs for the classes to be split across threads (when the
    # extension is built with OpenMP).
    boxes, scores, labels = make_detections(6000, num_classes=2, seed=3)
    boxes[:, 2:] += 100  # bigger boxes: more suppression inside each class
    expected = ml_nms_reference(boxes, scores, labels, 0.6)
    assert torch.equal(ml_nms(boxes, scores, labels, 0.6), expected)
    assert torch.equal(ml_nms(boxes, scores, labels, 0.6, legacy=False), ml_nms_reference(boxes, scores, labels, 0.6, False))


@needs_cpu_kernels
@pytest.mark.parametrize("fn", ["nms", "ml_nms"])
def test_empty_input(fn):
    boxes, scores, labels = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    args = (boxes, scores) if fn == "nms" else (boxes, scores, labels)
    for impl in (getattr(nms_module, fn), getattr(nms_module, fn + "_reference")):
        keep = impl(*args, 0.5)
        assert keep.shape == (0,) and keep.dtype == torch.int64
    keep = _extension.op(fn)(*args, 0.5, True)  # the kernel itself, not only the wrapper's shortcut
    assert keep.shape == (0,) and keep.dtype == torch.int64


@needs_cpu_kernels
@pytest.mark.parametrize("legacy", [True, False])
def test_all_equal_scores_keep_lower_index_first(legacy):
    boxes, _, labels = clustered_detections(150, seed=4)
    scores = torch.full((150,), 0.5)
    keep = nms(boxes, scores, 0.5, legacy)
    assert torch.equal(keep, nms_reference(boxes, scores, 0.5, legacy))
    assert keep[0] == 0 and torch.all(keep[1:] > keep[:-1])  # equal scores: visited by index
    assert torch.equal(ml_nms(boxes, scores, labels, 0.5, legacy), ml_nms_reference(boxes, scores, labels, 0.5, legacy))


@needs_cpu_kernels
@pytest.mark.parametrize("legacy", [True, False])
def test_degenerate_boxes(legacy):
    boxes, scores, labels = clustered_detections(120, seed=5)
    boxes[::4, 2] = boxes[::4, 0]  # zero width
    boxes[1::4, 3] = boxes[1::4, 1]  # zero height
    boxes[2::8, 2] = boxes[2::8, 0] - 5  # x2 < x1
    boxes[3::8] = boxes[3::8, :1].repeat(1, 4)  # a point
    for thresh in (0.0, 0.4):
        assert torch.equal(nms(boxes, scores, thresh, legacy), nms_reference(boxes, scores, thresh, legacy))
        assert torch.equal(
            ml_nms(boxes, scores, labels, thresh, legacy), ml_nms_reference(boxes, scores, labels, thresh, legacy)
        )


@needs_cpu_kernels
def test_non_contiguous_inputs():
    boxes, scores, labels = clustered_detections(200, seed=6)
    boxes_t = boxes.t().contiguous().t()  # same values, column-major strides
    scores_s = torch.stack([scores, torch.zeros_like(scores)], 1)[:, 0]  # stride 2
    labels_s = torch.stack([labels, labels], 1)[:, 1]
    assert not boxes_t.is_contiguous() and not scores_s.is_contiguous() and not labels_s.is_contiguous()
    assert torch.equal(nms(boxes_t, scores_s, 0.5), nms_reference(boxes, scores, 0.5))
    assert torch.equal(ml_nms(boxes_t, scores_s, labels_s, 0.5), ml_nms_reference(boxes, scores, labels, 0.5))


@needs_cpu_kernels
def test_half_and_bfloat16_boxes_match_reference():
    boxes, scores, labels = clustered_detections(150, seed=7)
    for dtype in (torch.float16, torch.bfloat16):
        b, s = boxes.to(dtype), scores.to(dtype)
        assert torch.equal(nms(b, s, 0.5), nms_reference(b, s, 0.5))
        assert torch.equal(ml_nms(b, s, labels, 0.5), ml_nms_reference(b, s, labels, 0.5))


@needs_cpu_kernels
@pytest.mark.parametrize("n", [200, 2000])
def test_continuous_mode_equals_torchvision(n):
    boxes, _, labels = make_detections(n, num_classes=6, seed=8)
    boxes[:, 2:] += 100
    scores = torch.randperm(n).float() / n  # distinct scores: torchvision's sort is not stable
    assert torch.equal(nms(boxes, scores, 0.5, legacy=False), torchvision.ops.nms(boxes, scores, 0.5))
    assert torch.equal(
        ml_nms(boxes, scores, labels, 0.5, legacy=False), torchvision.ops.batched_nms(boxes, scores, labels, 0.5)
    )


@needs_cpu_kernels
def test_legacy_plus_one_changes_the_result():
    # A = [0, 0, 9, 9], B = [5, 0, 14, 9]. Continuous: areas 81, intersection 4 x 9 = 36,
    # IoU 36 / 126 = 0.286. Legacy (+1): areas 100, intersection 5 x 10 = 50, IoU 50 / 150 = 0.333.
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]])
    scores = torch.tensor([0.9, 0.8])
    labels = torch.tensor([1, 1])
    assert nms(boxes, scores, 0.3, legacy=True).tolist() == [0]
    assert nms(boxes, scores, 0.3, legacy=False).tolist() == [0, 1]
    assert ml_nms(boxes, scores, labels, 0.3, legacy=True).tolist() == [0]
    assert ml_nms(boxes, scores, labels, 0.3, legacy=False).tolist() == [0, 1]
    assert ml_nms(boxes, scores, torch.tensor([1, 2]), 0.3, legacy=True).tolist() == [0, 1]


@needs_cpu_kernels
def test_iou_equal_to_threshold_is_kept():
    # Legacy: A = [0,0,0,0] has area 1, B = [0,0,1,0] area 2, intersection 1: IoU exactly 0.5.
    boxes = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]  # suppression needs IoU > threshold
    assert nms(boxes, scores, 0.4999).tolist() == [0]
    assert nms(boxes.double(), scores, 0.5).tolist() == [0, 1]


def test_invalid_shapes_raise_value_error():
    with pytest.raises(ValueError, match=r"boxes.*\(5, 3\)"):
        nms(torch.zeros(5, 3), torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match=r"scores.*\(4,\)"):
        nms(torch.zeros(5, 4), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"labels.*\(5, 1\)"):
        ml_nms(torch.zeros(5, 4), torch.zeros(5), torch.zeros(5, 1), 0.5)


def test_fallback_warns_once_and_uses_reference(monkeypatch):
    monkeypatch.setattr(_extension, "has_kernel", lambda op, device_type: False)
    monkeypatch.setattr(_extension, "_warned", set())
    boxes, scores, labels = clustered_detections(60, seed=9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keep = nms(boxes, scores, 0.5)
        keep_again = nms(boxes, scores, 0.5)
        ml_keep = ml_nms(boxes, scores, labels, 0.5)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 2  # once for nms, once for ml_nms
    assert all(_extension.BUILD_COMMAND in str(w.message) for w in runtime)
    assert "nms" in str(runtime[0].message) and "ml_nms" in str(runtime[1].message)
    assert torch.equal(keep, nms_reference(boxes, scores, 0.5)) and torch.equal(keep, keep_again)
    assert torch.equal(ml_keep, ml_nms_reference(boxes, scores, labels, 0.5))


# ----------------------------------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_nms_cuda_matches_cpu(legacy, dtype):
    for seed in range(3):
        for boxes, scores, _ in (make_detections(3000, seed=seed, dtype=dtype), clustered_detections(500, seed, dtype)):
            expected = nms(boxes, scores, 0.5, legacy)
            got = nms(boxes.cuda(), scores.cuda(), 0.5, legacy)
            assert got.is_cuda and torch.equal(got.cpu(), expected)


@needs_cuda
@pytest.mark.parametrize("legacy", [True, False])
def test_ml_nms_cuda_matches_cpu(legacy):
    for seed in range(3):
        boxes, scores, labels = make_detections(5000, num_classes=80, seed=seed)
        boxes[:, 2:] += 150
        for lab in (labels, labels.float()):
            expected = ml_nms(boxes, scores, lab, 0.6, legacy)
            got = ml_nms(boxes.cuda(), scores.cuda(), lab.cuda(), 0.6, legacy)
            assert torch.equal(got.cpu(), expected)


@needs_cuda
def test_cuda_equal_scores_empty_and_non_contiguous():
    boxes, _, labels = clustered_detections(300, seed=10)
    scores = torch.full((300,), 0.25)
    bt = boxes.cuda().t().contiguous().t()
    assert torch.equal(nms(bt, scores.cuda(), 0.5).cpu(), nms(boxes, scores, 0.5))
    assert torch.equal(ml_nms(bt, scores.cuda(), labels.cuda(), 0.5).cpu(), ml_nms(boxes, scores, labels, 0.5))
    empty = _extension.op("nms")(torch.zeros(0, 4, device="cuda"), torch.zeros(0, device="cuda"), 0.5, True)
    assert empty.shape == (0,) and empty.is_cuda
