"""BoxList: modes, geometry (legacy +1 pixel convention), field handling and ownership of tensors."""
import pytest
import torch

from fcos_core.structures import BoxList
from fcos_core.structures.bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM


def make_boxlist(mode="xyxy"):
    boxes = torch.tensor([[0.0, 0.0, 9.0, 19.0], [5.0, 4.0, 30.0, 12.0], [2.5, 1.5, 7.25, 3.0]])
    b = BoxList(boxes, (40, 30), mode="xyxy")
    b.add_field("labels", torch.tensor([1, 2, 3]))
    b.add_field("scores", torch.tensor([0.9, 0.5, 0.7]))
    return b.convert(mode)


def test_constructor_validates_and_stores_float32():
    b = BoxList([[0, 0, 1, 1]], [10, 20])
    assert b.bbox.dtype == torch.float32
    assert b.size == (10, 20)
    with pytest.raises(ValueError):
        BoxList(torch.zeros(4), (10, 10))
    with pytest.raises(ValueError):
        BoxList(torch.zeros(2, 5), (10, 10))
    with pytest.raises(ValueError):
        BoxList(torch.zeros(2, 4), (10, 10), mode="cxcywh")


def test_fields_api():
    b = make_boxlist()
    assert b.fields() == ["labels", "scores"]
    assert b.has_field("labels") and not b.has_field("masks")
    assert torch.equal(b.get_field("labels"), torch.tensor([1, 2, 3]))
    c = b.copy_with_fields("scores")
    assert c.fields() == ["scores"]
    with pytest.raises(KeyError):
        b.copy_with_fields(["scores", "missing"])
    assert b.copy_with_fields(["scores", "missing"], skip_missing=True).fields() == ["scores"]


def test_convert_legacy_width_and_round_trip():
    b = make_boxlist()
    wh = b.convert("xywh")
    assert wh.mode == "xywh"
    # width = x2 - x1 + 1
    assert torch.equal(wh.bbox[0], torch.tensor([0.0, 0.0, 10.0, 20.0]))
    assert torch.equal(wh.bbox[1], torch.tensor([5.0, 4.0, 26.0, 9.0]))
    back = wh.convert("xyxy")
    assert torch.allclose(back.bbox, b.bbox)
    assert torch.equal(back.get_field("labels"), b.get_field("labels"))
    with pytest.raises(ValueError):
        b.convert("cxcywh")


def test_split_into_xyxy_from_xywh():
    b = BoxList([[2.0, 3.0, 5.0, 1.0]], (10, 10), mode="xywh")
    x1, y1, x2, y2 = b._split_into_xyxy()
    assert [x1.item(), y1.item(), x2.item(), y2.item()] == [2.0, 3.0, 6.0, 3.0]


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_resize_scales_each_axis(mode):
    b = make_boxlist(mode)
    r = b.resize((80, 15))  # x * 2, y * 0.5
    assert r.size == (80, 15) and r.mode == mode
    expected = make_boxlist().bbox * torch.tensor([2.0, 0.5, 2.0, 0.5])
    assert torch.allclose(r.convert("xyxy").bbox, expected)
    assert torch.equal(r.get_field("labels"), b.get_field("labels"))


def test_resize_same_ratio_scales_everything():
    b = make_boxlist()
    r = b.resize((60, 45))
    assert torch.allclose(r.bbox, b.bbox * 1.5)


def test_resize_resizes_boxlist_fields():
    b = make_boxlist()
    b.add_field("inner", make_boxlist())
    r = b.resize((80, 15))
    inner = r.get_field("inner")
    assert isinstance(inner, BoxList) and inner.size == (80, 15)
    assert torch.allclose(inner.bbox, r.bbox)


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
@pytest.mark.parametrize("method", [FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM])
def test_transpose_twice_is_identity(mode, method):
    b = make_boxlist(mode)
    t = b.transpose(method)
    assert t.mode == mode
    assert not torch.allclose(t.bbox, b.bbox)
    assert torch.allclose(t.transpose(method).bbox, b.bbox)
    assert torch.equal(t.get_field("scores"), b.get_field("scores"))


def test_transpose_formulas_match_original():
    b = BoxList([[2.0, 3.0, 9.0, 7.0]], (20, 10))
    # left-right: x' = W - x - 1 (pixel-inclusive)
    assert b.transpose(FLIP_LEFT_RIGHT).bbox.tolist() == [[10.0, 3.0, 17.0, 7.0]]
    # top-bottom: y' = H - y (the original has no -1 here)
    assert b.transpose(FLIP_TOP_BOTTOM).bbox.tolist() == [[2.0, 3.0, 9.0, 7.0]]
    b2 = BoxList([[2.0, 1.0, 9.0, 4.0]], (20, 10))
    assert b2.transpose(FLIP_TOP_BOTTOM).bbox.tolist() == [[2.0, 6.0, 9.0, 9.0]]
    with pytest.raises(NotImplementedError):
        b.transpose(2)


def test_crop():
    b = make_boxlist()
    c = b.crop((4, 2, 14, 12))
    assert c.size == (10, 10)
    expected = torch.tensor([[0.0, 0.0, 5.0, 10.0], [1.0, 2.0, 10.0, 10.0], [0.0, 0.0, 3.25, 1.0]])
    assert torch.equal(c.bbox, expected)
    assert torch.equal(c.get_field("labels"), b.get_field("labels"))
    assert torch.equal(make_boxlist("xywh").crop((4, 2, 14, 12)).convert("xyxy").bbox, expected)


def test_clip_to_image():
    b = BoxList([[-5.0, -3.0, 50.0, 10.0], [45.0, 2.0, 60.0, 8.0], [3.0, 4.0, 8.0, 40.0]], (40, 30))
    b.add_field("labels", torch.tensor([1, 2, 3]))
    kept = b.clip_to_image()
    # the second box lies right of the image: after clipping x1 == x2 == W - 1, removed
    assert kept.bbox.tolist() == [[0.0, 0.0, 39.0, 10.0], [3.0, 4.0, 8.0, 29.0]]
    assert kept.get_field("labels").tolist() == [1, 3]
    all_boxes = b.clip_to_image(remove_empty=False)
    assert all_boxes.bbox.tolist()[1] == [39.0, 2.0, 39.0, 8.0]
    assert len(all_boxes) == 3
    # the source is not clipped
    assert b.bbox[0].tolist() == [-5.0, -3.0, 50.0, 10.0]


def test_clip_to_image_xywh():
    b = BoxList([[-5.0, -3.0, 56.0, 14.0]], (40, 30)).convert("xywh")
    c = b.clip_to_image()
    assert c.mode == "xywh"
    assert c.convert("xyxy").bbox.tolist() == [[0.0, 0.0, 39.0, 14.0]]


def test_area_legacy_plus_one():
    b = make_boxlist()
    assert torch.allclose(b.area(), torch.tensor([10.0 * 20.0, 26.0 * 9.0, 5.75 * 2.5]))
    assert torch.allclose(b.convert("xywh").area(), b.area())


def test_indexing_applies_to_fields():
    b = make_boxlist()
    for item in (torch.tensor([2, 0]), torch.tensor([True, False, True]), slice(1, 3), [1]):
        s = b[item]
        assert torch.equal(s.bbox, b.bbox[item])
        assert torch.equal(s.get_field("labels"), b.get_field("labels")[item])
        assert torch.equal(s.get_field("scores"), b.get_field("scores")[item])
        assert s.size == b.size and s.mode == b.mode
    assert len(b[torch.tensor([True, False, True])]) == 2
    assert len(b) == 3


def test_to_device_and_repr():
    b = make_boxlist()
    c = b.to("cpu")
    assert torch.equal(c.bbox, b.bbox) and torch.equal(c.get_field("labels"), b.get_field("labels"))
    assert repr(b) == "BoxList(num_boxes=3, image_width=40, image_height=30, mode=xyxy)"


def _results(b):
    """Every method returning a BoxList, applied to b."""
    return {
        "convert_same": b.convert(b.mode),
        "convert_other": b.convert("xywh" if b.mode == "xyxy" else "xyxy"),
        "resize_uniform": b.resize((80, 60)),
        "resize": b.resize((80, 15)),
        "resize_identity": b.resize(b.size),
        "transpose_lr": b.transpose(FLIP_LEFT_RIGHT),
        "transpose_tb": b.transpose(FLIP_TOP_BOTTOM),
        "crop": b.crop((0, 0, 40, 30)),
        "clip": b.clip_to_image(remove_empty=False),
        "clip_remove": b.clip_to_image(),
        "to": b.to("cpu"),
        "slice": b[0:3],
        "index": b[torch.tensor([0, 1, 2])],
        "mask": b[torch.ones(3, dtype=torch.bool)],
        "copy_with_fields": b.copy_with_fields(b.fields()),
    }


@pytest.mark.parametrize("mode", ["xyxy", "xywh"])
def test_no_method_result_aliases_its_source(mode):
    b = make_boxlist(mode)
    bbox, labels, scores = b.bbox.clone(), b.get_field("labels").clone(), b.get_field("scores").clone()
    for name, r in _results(b).items():
        r.bbox.add_(100.0)
        r.get_field("labels").add_(7)
        r.get_field("scores").mul_(-1)
        r.add_field("extra", torch.zeros(len(r)))
        r.clip_to_image()
        assert torch.equal(b.bbox, bbox), name
        assert torch.equal(b.get_field("labels"), labels), name
        assert torch.equal(b.get_field("scores"), scores), name
        assert b.fields() == ["labels", "scores"], name


def test_boxlist_field_not_aliased():
    b = make_boxlist()
    b.add_field("inner", make_boxlist())
    before = b.get_field("inner").bbox.clone()
    for name, r in _results(b).items():
        r.get_field("inner").bbox.add_(5.0)
        assert torch.equal(b.get_field("inner").bbox, before), name


def test_gradients_flow_through_methods():
    boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0]], requires_grad=True)
    b = BoxList(boxes, (20, 20))
    total = b.resize((40, 10)).bbox.sum() + b.convert("xywh").bbox.sum() + b.clip_to_image().bbox.sum()
    total.backward()
    assert boxes.grad is not None and torch.isfinite(boxes.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_and_back():
    b = make_boxlist()
    c = b.to("cuda")
    assert c.bbox.is_cuda and c.get_field("labels").is_cuda
    assert torch.equal(c.to("cpu").bbox, b.bbox)
