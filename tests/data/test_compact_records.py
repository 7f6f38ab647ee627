"""COCODataset's compact records give exactly the targets, image entries, ids, skips and evaluation
ground truth of the previous pycocotools-backed implementation (PycocotoolsCOCODataset), on a
generated COCO-like json with broken records and on hand-made jsons of every odd kind; a DataLoader
with 2 workers iterates it; nothing per image is a Python object."""
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_core.data.datasets import COCODataset, data_skip_counts
from fcos_core.data.datasets.coco_reference import PycocotoolsCOCODataset
from fcos_core.data.datasets.skips import SkipLog
from fcos_core.data.datasets.synthetic_coco import make_coco_like


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A generated 2,000-image COCO-like json with 4 broken annotations of each kind."""
    return make_coco_like(str(tmp_path_factory.mktemp("gen") / "coco"), num_images=2000, seed=3, broken=4)


def assert_same(ann_file, root, train):
    """Build both implementations and compare everything training and evaluation read."""
    new, old = COCODataset(ann_file, root, train), PycocotoolsCOCODataset(ann_file, root, train)
    assert len(new) == len(old) and new.ids == old.ids and new.id_to_img_map == old.id_to_img_map
    assert data_skip_counts(new) == data_skip_counts(old)
    assert new.class_names == old.class_names and new.categories == old.categories
    assert new.json_category_id_to_contiguous_id == old.json_category_id_to_contiguous_id
    for i in range(len(new)):
        a, b = new.get_groundtruth(i), old.get_groundtruth(i)
        assert a.size == b.size and torch.equal(a.bbox, b.bbox), i
        assert torch.equal(a.get_field("labels"), b.get_field("labels")) and a.get_field("labels").dtype == torch.int64
        info_a, info_b = new.get_img_info(i), old.get_img_info(i)
        assert {k: info_a[k] for k in info_a} == {k: info_b[k] for k in info_a}
    gt_new, gt_old = new.coco, old.coco
    assert sorted(gt_new.imgs) == sorted(gt_old.imgs) and sorted(gt_new.anns) == sorted(gt_old.anns)
    for ann_id, ann in gt_old.anns.items():
        assert gt_new.anns[ann_id] == {k: v for k, v in ann.items() if k != "segmentation"}
    return new


@pytest.mark.parametrize("train", [True, False])
def test_generated_json_with_broken_records(generated, train, caplog):
    with caplog.at_level(logging.WARNING):
        ds = assert_same(generated["ann_file"], generated["root"], train)
    assert data_skip_counts(ds) == {"bad_box": 4, "unknown_image": 4, "unknown_category": 4}
    compact_lines = [r for r in caplog.records if "COCODataset(" in r.getMessage() and "PycocotoolsCOCODataset" not in
                     r.getMessage()]
    assert len(compact_lines) <= 2 * (12 + 1)  # per box at most once per implementation, plus one summary each
    assert sum("skipped {" in r.getMessage() for r in caplog.records) == 2


def test_many_broken_records_are_counted_and_logged_once(tmp_path, caplog):
    out = make_coco_like(str(tmp_path / "c"), num_images=300, seed=1, broken=40)
    with caplog.at_level(logging.WARNING):
        ds = COCODataset(out["ann_file"], out["root"], True)
    assert data_skip_counts(ds) == {"bad_box": 40, "unknown_image": 40, "unknown_category": 40}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 * (SkipLog.MAX_MESSAGES + 1) + 1  # 20 each, "not shown" each, one summary
    assert sum("skipped {" in m for m in messages) == 1


def write_json(folder, data, indent=None):
    """``data`` as ann.json in ``folder`` plus a grey PNG per image entry with a size; returns (ann, root)."""
    root = os.path.join(str(folder), "images")
    for img in data.get("images", []):
        if isinstance(img, dict) and isinstance(img.get("file_name"), str) and isinstance(img.get("width"), int):
            path = os.path.join(root, img["file_name"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(np.full((img["height"], img["width"]), 90, np.uint8), "L").save(path)
    ann_file = os.path.join(str(folder), "ann.json")
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent, ensure_ascii=False)
    return ann_file, root


ODD_JSON = {
    "annotations": [  # before "images": any member order
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 5], "segmentation": [[1, 2, 3, 4, 5, 6]]},
        {"id": 1, "image_id": 2, "category_id": 7, "bbox": ["3", 4, 5.5, 6], "iscrowd": "0", "area": "x"},
        {"image_id": 2.0, "category_id": 7.0, "bbox": [30, 20, 20, 20], "iscrowd": True},  # float ids, crowd
        {"id": "a", "image_id": 2, "category_id": 3, "bbox": [30, 20, 20, 20]},            # clipped
        {"id": 5, "image_id": 2, "category_id": 3, "bbox": [50, 5, 10, 10]},               # outside
        {"id": 6, "image_id": 2, "category_id": 3, "bbox": [39.5, 5, 3, 10]},              # outside after clip
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 1, True, 4]},               # bool: bad box
        {"id": 8, "image_id": 1, "category_id": 3, "bbox": [1, 1, 0, 4]},                  # empty
        {"id": 9, "image_id": 1, "category_id": 3, "bbox": None, "iscrowd": 1},            # crowd, no box
        {"id": 10, "image_id": 4, "category_id": 3, "bbox": [1, 1, 4, 4]},                 # image without size
        {"id": 11, "image_id": "1", "category_id": 3, "bbox": [1, 1, 4, 4]},               # string image id
        {"id": 12, "image_id": 1, "category_id": "3", "bbox": [1, 1, 4, 4]},               # string category id
        {"id": 13, "image_id": 3, "category_id": 12, "bbox": [2, 3, 5, 6], "segmentation": {"counts": "x"}},
        7, None, {"image_id": 1},                                                          # not annotations
        {"id": 2 ** 70, "image_id": 1, "category_id": 12, "bbox": [1, 1, 4, 4], "iscrowd": 0.0},
    ],
    "images": [
        {"id": 2, "file_name": "b.png", "width": 40, "height": 30, "coco_url": "x"},
        {"id": 1, "file_name": "sub/a \"q\" é.png", "width": 40, "height": 30},
        {"id": 3, "file_name": "c.png", "width": 20, "height": 50},
        {"id": 4, "file_name": "d.png"}, {"file_name": "e.png"}, "image",
    ],
    "categories": [{"id": 12, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7}],
    "info": {"description": "[{,:\\\"}]"},
}


@pytest.mark.parametrize("indent", [None, 1])
@pytest.mark.parametrize("train", [True, False])
def test_odd_json_same_as_reference(tmp_path, indent, train):
    ann_file, root = write_json(tmp_path, ODD_JSON, indent)
    ds = assert_same(ann_file, root, train)
    assert data_skip_counts(ds) == {"bad_annotation": 3, "image_without_size": 3, "clipped": 1, "outside_image": 2,
                                    "bad_box": 2, "empty_box": 1, "unknown_image": 2, "unknown_category": 1}
    assert ds.class_names == ["__background", "cat", "7", "bird"]
    assert ds[ds.ids.index(1)][0].size == (40, 30)  # the file with quotes and a sub-folder is read


def test_shapes_and_tool_json_datasets_same_as_reference(tmp_path):
    from fcos_core.data.datasets.shapes import generate_shapes_dataset

    img_dir, ann_file = generate_shapes_dataset(str(tmp_path / "s"), 6, seed=0)
    assert_same(ann_file, img_dir, True)
    assert_same(ann_file, img_dir, False)


def test_records_are_arrays_and_the_ground_truth_is_built_on_use(generated):
    ds = COCODataset(generated["ann_file"], generated["root"], True)
    records = ds._records
    for name in ("image_ids", "sizes", "names", "name_offsets", "boxes", "labels", "box_offsets"):
        assert isinstance(getattr(records, name), np.ndarray), name
    assert records.boxes.dtype == np.float32 and len(records.box_offsets) == len(ds) + 1
    assert records.nbytes < 200 * len(ds)  # ~7 boxes of 20 bytes per image, a name, a size
    assert ds._coco is None and not any(isinstance(v, (list, dict)) and len(v) >= len(ds) for v in vars(ds).values())
    ds.get_groundtruth(0), ds.get_img_info(5)
    assert ds._coco is None  # training never builds the pycocotools object
    assert len(ds.coco.imgs) == 2000 and ds._coco is not None


def test_data_loader_with_two_workers(generated):
    ds = COCODataset(generated["ann_file"], generated["root"], True)
    subset = torch.utils.data.Subset(ds, list(range(0, len(ds), 97)))
    loader = torch.utils.data.DataLoader(subset, batch_size=4, num_workers=2, collate_fn=list)
    seen = {}
    for batch in loader:
        for img, target, index in batch:
            seen[index] = target
            assert img.size == target.size == (ds.get_img_info(index)["width"], ds.get_img_info(index)["height"])
    assert sorted(seen) == list(range(0, len(ds), 97))
    for index, target in seen.items():
        assert torch.equal(target.bbox, ds.get_groundtruth(index).bbox)
    assert not ds.failures.counts()
