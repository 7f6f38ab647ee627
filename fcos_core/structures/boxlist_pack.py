"""Many BoxLists as a few flat tensors and back: how distributed inference sends its detections to
rank 0 (``torch.distributed.gather`` of tensors instead of pickling thousands of Python objects).

The packed form of N images with K boxes in all (images in increasing index order, each image's
boxes contiguous):

- ``"image_index"``: int64 [N], the dataset index of each image;
- ``"image_size"``: int64 [N, 2], (width, height) in pixels of the BoxList;
- ``"num_boxes"``: int64 [N], the boxes of each image (sum K);
- ``"boxes"``: [K, 4] ``xyxy`` in pixels (the BoxLists' dtype, usually float32);
- ``"field.<name>"``: [K, ...] for every field (e.g. "field.scores" float32 [K], "field.labels" int64 [K]).
"""
import torch

from .bounding_box import BoxList

FIELD_PREFIX = "field."
_META = ("image_index", "image_size", "num_boxes")


def pack_boxlists(boxlists_by_index):
    """Pack ``{dataset index: BoxList}`` into the flat tensors of the module docstring (on the CPU).

    Every BoxList must have the same field names, each field a tensor with one row per box;
    otherwise a ValueError names the index and the field. The BoxLists are not changed.
    """
    indices = sorted(boxlists_by_index)
    boxlists = [boxlists_by_index[i] for i in indices]
    names = sorted(boxlists[0].fields()) if boxlists else []
    for index, boxlist in zip(indices, boxlists):
        _check_fields(index, boxlist, names)
    packed = {
        "image_index": torch.tensor(indices, dtype=torch.int64),
        "image_size": torch.tensor([[int(s) for s in b.size] for b in boxlists], dtype=torch.int64).reshape(-1, 2),
        "num_boxes": torch.tensor([len(b) for b in boxlists], dtype=torch.int64),
        "boxes": _cat([b.convert("xyxy").bbox for b in boxlists], torch.zeros(0, 4)),
    }
    for name in names:
        packed[FIELD_PREFIX + name] = _cat([b.get_field(name) for b in boxlists], None)
    return packed


def _check_fields(index, boxlist, names):
    if sorted(boxlist.fields()) != names:
        raise ValueError("cannot pack the BoxList of image {}: its fields {} differ from the other images' {}".format(
            index, sorted(boxlist.fields()), names))
    for name in names:
        value = boxlist.get_field(name)
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != len(boxlist):
            raise ValueError("cannot pack field {!r} of image {}: a tensor with one row per box ({}) is needed, got "
                             "{}".format(name, index, len(boxlist), getattr(value, "shape", type(value).__name__)))


def _cat(tensors, empty):
    """torch.cat of detached CPU tensors (``empty`` when there are none)."""
    if not tensors:
        return empty
    return torch.cat([t.detach().cpu() for t in tensors])


def unpack_boxlists(packed):
    """``{dataset index: BoxList}`` (xyxy, fields restored) from one or several packed dicts.

    Arguments:
        packed (dict or list[dict]): outputs of :func:`pack_boxlists` (e.g. one per process). An
            index found in several keeps its last BoxList (a distributed sampler may repeat images).

    Raises:
        ValueError: a dict whose lengths disagree (names the key).
    """
    out = {}
    for part in [packed] if isinstance(packed, dict) else packed:
        num_boxes = part["num_boxes"].tolist()
        total = sum(num_boxes)
        for key, value in part.items():
            expected = len(num_boxes) if key in _META else total
            if value.shape[0] != expected:
                raise ValueError("packed BoxLists: {!r} has {} rows, expected {}".format(key, value.shape[0], expected))
        boxes = part["boxes"].split(num_boxes)
        fields = {k[len(FIELD_PREFIX):]: v.split(num_boxes) for k, v in part.items() if k.startswith(FIELD_PREFIX)}
        for i, (index, size) in enumerate(zip(part["image_index"].tolist(), part["image_size"].tolist())):
            boxlist = BoxList(boxes[i], tuple(size), mode="xyxy")
            for name, chunks in fields.items():
                boxlist.add_field(name, chunks[i])
            out[index] = boxlist
    return out
