"""COCODataset: targets, category mapping, crowd and empty images, and bad data (reported, skipped)."""
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_core.data.datasets import COCODataset, ConcatDataset, data_skip_counts
from fcos_core.data.datasets.shapes import generate_shapes_dataset
from fcos_core.structures.bounding_box import BoxList


def write_coco(folder, images, annotations, category_ids=(1, 2), write_images=True):
    """A COCO json + PNG images in ``folder``; ``images`` = [(id, width, height)]; returns (ann, img_dir)."""
    img_dir = os.path.join(str(folder), "images")
    os.makedirs(img_dir, exist_ok=True)
    entries = []
    for img_id, w, h in images:
        name = "{}.png".format(img_id)
        entries.append({"id": img_id, "file_name": name, "width": w, "height": h})
        if write_images:
            Image.fromarray(np.full((h, w, 3), 40 * img_id % 256, np.uint8)).save(os.path.join(img_dir, name))
    anns = []
    for k, ann in enumerate(annotations):
        anns.append(dict({"id": k + 1, "iscrowd": 0, "area": 1.0}, **ann))
    data = {"images": entries, "annotations": anns,
            "categories": [{"id": c, "name": "c{}".format(c)} for c in category_ids]}
    ann_file = os.path.join(str(folder), "ann.json")
    with open(ann_file, "w") as f:
        json.dump(data, f)
    return ann_file, img_dir


def test_shapes_targets(tmp_path):
    img_dir, ann_file = generate_shapes_dataset(str(tmp_path / "s"), 4, seed=0)
    ds = COCODataset(ann_file, img_dir, remove_images_without_annotations=True)
    assert len(ds) == 4 and ds.categories[1] == "circle"
    for i in range(len(ds)):
        img, target, index = ds[i]
        assert index == i and isinstance(target, BoxList) and target.mode == "xyxy"
        info = ds.get_img_info(i)
        assert img.size == target.size == (info["width"], info["height"])
        labels = target.get_field("labels")
        assert labels.dtype == torch.int64 and len(labels) == len(target) > 0
        assert ((labels >= 1) & (labels <= 6)).all()
        b = target.bbox
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= info["width"] - 1).all() and (b[:, 3] <= info["height"] - 1).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    # xywh -> pixel-inclusive xyxy, as BoxList(mode="xywh").convert("xyxy")
    ann = ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=ds.id_to_img_map[0]))
    expected = BoxList(torch.tensor([a["bbox"] for a in ann], dtype=torch.float32), (1, 1), "xywh").convert("xyxy")
    assert torch.equal(ds[0][1].bbox, expected.bbox)


def test_non_contiguous_category_ids_round_trip(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [(1, 40, 30)], [
        {"image_id": 1, "category_id": 12, "bbox": [1, 1, 10, 10]},
        {"image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10]},
        {"image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 10]},
    ], category_ids=(12, 3, 7))
    ds = COCODataset(ann_file, img_dir, True)
    assert ds.json_category_id_to_contiguous_id == {3: 1, 7: 2, 12: 3}
    assert ds.contiguous_category_id_to_json_id == {1: 3, 2: 7, 3: 12}
    labels = ds[0][1].get_field("labels").tolist()
    assert labels == [3, 1, 2]
    assert [ds.contiguous_category_id_to_json_id[c] for c in labels] == [12, 3, 7]


def test_crowd_ignored_and_empty_images_dropped_for_training_only(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [(1, 40, 30), (2, 40, 30), (3, 30, 40)], [
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 30, 20], "iscrowd": 1},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 20], "iscrowd": 1},  # crowd only
    ])
    train = COCODataset(ann_file, img_dir, remove_images_without_annotations=True)
    test = COCODataset(ann_file, img_dir, remove_images_without_annotations=False)
    assert train.ids == [1] and test.ids == [1, 2, 3]
    assert train[0][1].get_field("labels").tolist() == [1]
    assert len(test[1][1]) == 0 and len(test[2][1]) == 0
    assert test.get_img_info(2)["width"] == 30 and not data_skip_counts(train)


def test_bad_annotations_are_reported_and_skipped(tmp_path, caplog):
    ann_file, img_dir = write_coco(tmp_path, [(1, 40, 30)], [
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]},    # 1 fine
        {"image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10]},     # 2 zero width
        {"image_id": 1, "category_id": 2, "bbox": [5, 5, 10, -3]},    # 3 negative height
        {"image_id": 1, "category_id": 2, "bbox": [30, 20, 20, 20]},  # 4 sticks out: clipped
        {"image_id": 1, "category_id": 2, "bbox": [50, 5, 10, 10]},   # 5 outside: dropped
        {"image_id": 1, "category_id": 99, "bbox": [1, 1, 10, 10]},   # 6 unknown category
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, "a", 10]},   # 7 not numbers
        {"image_id": 42, "category_id": 1, "bbox": [1, 1, 10, 10]},   # 8 unknown image
    ])
    with caplog.at_level(logging.WARNING):
        ds = COCODataset(ann_file, img_dir, True)
    for ann_id, word in [(2, "zero or negative"), (3, "zero or negative"), (4, "clipped"), (5, "outside"),
                         (6, "category id 99"), (7, "not 4 finite numbers"), (8, "image id 42")]:
        assert any("annotation id {}".format(ann_id) in r.getMessage() and word in r.getMessage()
                   for r in caplog.records), (ann_id, word)
    target = ds[0][1]
    assert target.get_field("labels").tolist() == [1, 2]
    assert target.bbox[1].tolist() == [30, 20, 39, 29]
    assert data_skip_counts(ds) == {"empty_box": 2, "clipped": 1, "outside_image": 1, "unknown_category": 1,
                                    "bad_box": 1, "unknown_image": 1}


def test_missing_and_corrupt_images_give_the_next_sample(tmp_path, caplog):
    ann_file, img_dir = write_coco(tmp_path, [(1, 40, 30), (2, 40, 30), (3, 40, 30)], [
        {"image_id": i, "category_id": 1, "bbox": [1, 1, 10, 10]} for i in (1, 2, 3)])
    os.remove(os.path.join(img_dir, "1.png"))
    with open(os.path.join(img_dir, "2.png"), "wb") as f:
        f.write(b"\x89PNG not really")
    ds = COCODataset(ann_file, img_dir, True)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # reported once per image, however often it is asked for
            assert ds[0][2] == 2 and ds[1][2] == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("1.png" in m for m in messages) == 1 and sum("2.png" in m for m in messages) == 1
    assert data_skip_counts(ds)["unreadable_image"] == 2
    os.remove(os.path.join(img_dir, "3.png"))
    with pytest.raises(RuntimeError, match="none of its 3 images"):
        ds[0]


def test_image_size_differs_from_json(tmp_path, caplog):
    ann_file, img_dir = write_coco(tmp_path, [(1, 40, 30)], [
        {"image_id": 1, "category_id": 1, "bbox": [20, 1, 19, 10]}])
    Image.fromarray(np.zeros((30, 25, 3), np.uint8)).save(os.path.join(img_dir, "1.png"))
    ds = COCODataset(ann_file, img_dir, True)
    with caplog.at_level(logging.WARNING):
        img, target, _ = ds[0]
    assert target.size == img.size == (25, 30) and target.bbox.tolist() == [[20, 1, 24, 10]]
    assert "json says 40x30" in caplog.text
    assert data_skip_counts(ds)["image_size_mismatch"] == 1


@pytest.mark.parametrize("content, message", [
    ("", "not valid JSON"),
    ('{"images": [], "annotations": [], "categories": []}', "lists no images"),
])
def test_empty_annotation_file_fails_at_construction(tmp_path, content, message):
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(content)
    with pytest.raises(ValueError, match=message):
        COCODataset(str(ann_file), str(tmp_path), True)


def test_no_usable_image_for_training(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [(1, 40, 30)], [])
    with pytest.raises(ValueError, match="no usable image with annotations"):
        COCODataset(ann_file, img_dir, True)
    assert len(COCODataset(ann_file, img_dir, False)) == 1
    with pytest.raises(FileNotFoundError, match="not found"):
        COCODataset(str(tmp_path / "missing.json"), img_dir, True)


def test_concat_dataset(tmp_path):
    a = write_coco(tmp_path / "a", [(1, 40, 30), (2, 40, 30)], [
        {"image_id": i, "category_id": 1, "bbox": [1, 1, 10, 10]} for i in (1, 2)])
    b = write_coco(tmp_path / "b", [(1, 20, 50)], [{"image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]},
                                                   {"image_id": 1, "category_id": 2, "bbox": [1, 1, 0, 5]}])
    ds = ConcatDataset([COCODataset(*a, True), COCODataset(*b, True)])
    assert len(ds) == 3 and ds.get_idxs(2) == (1, 0)
    assert ds.get_img_info(2)["width"] == 20 and ds[2][1].get_field("labels").tolist() == [2]
    assert data_skip_counts(ds) == {"empty_box": 1}
