"""pack_boxlists / unpack_boxlists: a round trip keeps boxes (as xyxy), sizes and every field bit for
bit, images with no boxes included; mismatched fields are refused with the index and field named."""
import pytest
import torch

from fcos_core.structures import BoxList
from fcos_core.structures.boxlist_pack import pack_boxlists, unpack_boxlists


def make_boxlist(n, size=(64, 48), mode="xyxy", seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * 10], 1)
    boxlist = BoxList(boxes, size, mode="xyxy").convert(mode)
    boxlist.add_field("scores", torch.rand(n, generator=g))
    boxlist.add_field("labels", torch.randint(1, 80, (n,), generator=g))
    boxlist.add_field("points", torch.rand(n, 3, 2, generator=g, dtype=torch.float64))  # any trailing shape
    return boxlist


def test_round_trip_keeps_every_box_field_and_size():
    originals = {7: make_boxlist(5, seed=1), 2: make_boxlist(0, (10, 20)), 4: make_boxlist(3, (33, 44), "xywh", 2)}
    packed = pack_boxlists(originals)
    assert packed["image_index"].tolist() == [2, 4, 7] and packed["num_boxes"].tolist() == [0, 3, 5]
    assert packed["image_size"].tolist() == [[10, 20], [33, 44], [64, 48]]
    assert packed["boxes"].shape == (8, 4) and packed["field.points"].shape == (8, 3, 2)
    assert all(isinstance(v, torch.Tensor) for v in packed.values())
    restored = unpack_boxlists(packed)
    assert sorted(restored) == [2, 4, 7]
    for index, original in originals.items():
        got = restored[index]
        assert got.mode == "xyxy" and got.size == original.size
        assert torch.equal(got.bbox, original.convert("xyxy").bbox)
        for name in ("scores", "labels", "points"):
            assert got.get_field(name).dtype == original.get_field(name).dtype
            assert torch.equal(got.get_field(name), original.get_field(name)), (index, name)


def test_several_parts_merge_and_nothing_packs_to_empty_tensors():
    a, b = pack_boxlists({0: make_boxlist(2)}), pack_boxlists({1: make_boxlist(4, seed=3)})
    assert sorted(unpack_boxlists([a, b])) == [0, 1]
    empty = pack_boxlists({})
    assert {k: tuple(v.shape) for k, v in empty.items()} == {
        "image_index": (0,), "image_size": (0, 2), "num_boxes": (0,), "boxes": (0, 4)}
    assert unpack_boxlists([empty, a]).keys() == {0}


def test_fields_that_cannot_be_packed_are_named():
    other = make_boxlist(2)
    other.add_field("extra", torch.zeros(2))
    with pytest.raises(ValueError, match=r"image 3: its fields .*'extra'"):
        pack_boxlists({1: make_boxlist(2), 3: other})
    odd = make_boxlist(2)
    odd.add_field("scores", [0.5, 0.25])  # not a tensor
    with pytest.raises(ValueError, match="field 'scores' of image 5"):
        pack_boxlists({5: odd})
    broken = pack_boxlists({0: make_boxlist(3)})
    broken["field.scores"] = broken["field.scores"][:2]
    with pytest.raises(ValueError, match="'field.scores' has 2 rows, expected 3"):
        unpack_boxlists(broken)
