"""json_stream.ObjectMembers: the members of a top-level object, arrays in batches, against json.loads;
chunk and batch borders anywhere (tiny sizes), strings holding brackets, commas, colons and escapes,
pruning of deep leaves, and clear errors for invalid files."""
import json

import pytest

from fcos_core.data.datasets import json_stream

DOCS = [
    {"a": 1, "images": [{"x": "q\"[,:]\\", "y": [1, 2, {"z": "\\\\\""}]}, 3, "s,]", None, [], {}],
     "annotations": [], "c": {"k": [1, 2], "images": [9]}},
    {"images": [1]},
    {},
    {"a\"b,": {"images": [1, 2]}, "images": [[1, 2], [3]], "d": "\\"},
    {"annotations": [{"bbox": [1, 2, 3, 4], "segmentation": [[1, 2, 3], [4, 5]], "t": "é ü"}] * 5, "images": []},
]


def read_all(path, prune_depth=None):
    """{key: value}, the array members "images" and "annotations" joined from their batches."""
    with json_stream.ObjectMembers(path, prune_depth) as doc:
        return {k: (sum(doc.batches(k), []) if k in ("images", "annotations") and
                    isinstance(doc.value(k), list) else doc.value(k)) for k in doc.keys()}


def is_pruning_of(got, orig):
    """True if ``got`` is ``orig`` with some innermost lists/dicts (below the annotation's fields) emptied."""
    if got == orig:
        return True
    if isinstance(orig, list) and isinstance(got, list):
        leaf = not any(isinstance(v, (list, dict)) for v in orig)
        return (leaf and got == []) or (len(got) == len(orig) and all(map(is_pruning_of, got, orig)))
    if isinstance(orig, dict) and isinstance(got, dict):
        leaf = not any(isinstance(v, (list, dict)) for v in orig.values())
        return (leaf and got == {}) or (got.keys() == orig.keys() and all(is_pruning_of(got[k], orig[k]) for k in orig))
    return False


@pytest.mark.parametrize("chunk, batch", [(5, 7), (64, 1), (1 << 20, 1 << 20)])
@pytest.mark.parametrize("indent", [None, 2])
def test_members_equal_json_loads(tmp_path, monkeypatch, chunk, batch, indent):
    monkeypatch.setattr(json_stream, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(json_stream, "BATCH_BYTES", batch)
    path = tmp_path / "doc.json"
    for doc in DOCS:
        path.write_text(json.dumps(doc, indent=indent, ensure_ascii=False), encoding="utf-8")
        assert read_all(str(path)) == doc


def test_batches_hold_about_batch_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(json_stream, "BATCH_BYTES", 100)
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"images": [{"id": i, "file_name": "{}.jpg".format(i)} for i in range(100)]}))
    with json_stream.ObjectMembers(str(path)) as doc:
        sizes = [len(b) for b in doc.batches("images")]
    assert sum(sizes) == 100 and len(sizes) > 10 and max(sizes) <= 4


def test_prune_leaves_out_deep_leaves_only(tmp_path, monkeypatch):
    monkeypatch.setattr(json_stream, "CHUNK_BYTES", 9)
    ann = {"id": 1, "bbox": [1.5, 2, 3, 4], "segmentation": [[1, 2, 3, 4], [5, 6]], "name": "[x]",
           "rle": {"counts": [1, 2, 3], "size": [2, 3]}, "deep": [[[7]], [8]]}
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"annotations": [ann, ann], "categories": [{"id": 1, "k": [[1]]}]}))
    got = read_all(str(path), prune_depth=5)
    pruned = dict(ann, segmentation=[[], []], rle={"counts": [], "size": []}, deep=[[[]], []])
    # a leaf that crosses a scan chunk border is kept: each leaf is emptied or equal to the original
    for a in got["annotations"]:
        assert is_pruning_of(a, ann) and a["bbox"] == ann["bbox"] and a["name"] == "[x]" and a["id"] == 1
    assert got["categories"] == [{"id": 1, "k": [[1]]}]  # whole values are not pruned
    monkeypatch.setattr(json_stream, "CHUNK_BYTES", 1 << 20)
    assert read_all(str(path), prune_depth=5)["annotations"] == [pruned, pruned]


@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("{", "unbalanced"),
    ('{"a": [1,}', "unbalanced"),
    ('{"a" 1}', "misplaced"),
    ('{"a": 1} x', "extra data"),
    ('{"images": [1, 2,]}', "images"),
    ('{"a": tru}', "'a'"),
])
def test_invalid_json_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        with json_stream.ObjectMembers(str(path)) as doc:
            for key in doc.keys():
                list(doc.batches(key)) if key == "images" else doc.value(key)
    assert "bad.json" in str(e.value)


def test_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(json_stream.NotAnObject):
        json_stream.ObjectMembers(str(path))


def test_standard_json_module_when_orjson_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(json_stream, "orjson", None)
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(DOCS[0]))
    assert read_all(str(path)) == DOCS[0]


def test_nan_and_infinity_as_json_dump_writes_them(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"images": [{"b": [1, float("nan"), float("inf")]}], "x": -float("inf")}))
    got = read_all(str(path))
    assert got["x"] == -float("inf") and got["images"][0]["b"][0] == 1 and got["images"][0]["b"][2] == float("inf")
