"""COCODataset on a json as annotation tools write it: no area / iscrowd / ids, segmentation in any
form, non-contiguous category ids, sub-folder file names, EXIF-rotated JPEGs; the json is completed
in memory (the file is left alone) and the evaluation's ground truth is what training uses."""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from fcos_core.data.datasets import COCODataset, data_skip_counts

CATEGORIES = [{"id": 12, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def write_tool_json(folder, images, annotations, categories=CATEGORIES):
    """``images``: [(id, file_name, width, height)] (files written as grey PNGs when missing);
    ``annotations``: dicts written as given (no id, area or iscrowd added). Returns (ann_file, root)."""
    root = os.path.join(str(folder), "images")
    for img_id, name, w, h in images:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            Image.fromarray(np.full((h, w), 90, np.uint8), "L").save(path)
    data = {"images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
            "annotations": annotations, "categories": categories}
    ann_file = os.path.join(str(folder), "tool.json")
    with open(ann_file, "w") as f:
        json.dump(data, f)
    return ann_file, root


def test_missing_fields_are_filled_in_memory_and_logged(tmp_path, caplog):
    ann_file, root = write_tool_json(tmp_path, [(1, "a.png", 40, 30), (2, "b.png", 40, 30)], [
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 5]},
        {"image_id": 1, "category_id": 7, "bbox": [20, 2, 8, 4], "segmentation": [[20, 2, 28, 2, 28, 6]]},
        {"image_id": 2, "category_id": 12, "bbox": [3, 3, 6, 6], "segmentation": {"size": [30, 40], "counts": "x"}},
        {"id": 9, "image_id": 2, "category_id": 3, "bbox": [0, 0, 4, 4], "area": 99.0, "iscrowd": 1,
         "segmentation": None},
        {"id": 10, "image_id": 2, "category_id": 3, "bbox": [0, 10, 4, 4], "area": "16", "iscrowd": True},
        {"id": 11, "image_id": 2, "category_id": 3, "bbox": ["30", 10, 4, 4], "iscrowd": "0"},
    ])
    before = open(ann_file).read()
    with caplog.at_level(logging.INFO, logger="fcos_core.data.datasets.coco"):
        ds = COCODataset(ann_file, root, False)
    assert open(ann_file).read() == before  # the user's file is not changed
    anns = sorted(ds.coco.dataset["annotations"], key=lambda a: a["bbox"])
    # w*h where missing; the given area kept, as a number; iscrowd as 0/1 ("0" is no crowd)
    assert [(a["bbox"], a["area"], a["iscrowd"]) for a in anns] == [
        ([0.0, 0.0, 4.0, 4.0], 99.0, 1), ([0.0, 10.0, 4.0, 4.0], 16.0, 1), ([1.0, 2.0, 10.0, 5.0], 50.0, 0),
        ([3.0, 3.0, 6.0, 6.0], 36.0, 0), ([20.0, 2.0, 8.0, 4.0], 32.0, 0), ([30.0, 10.0, 4.0, 4.0], 16.0, 0)]
    assert len({a["id"] for a in anns}) == 6 and {9, 10, 11} <= set(ds.coco.anns)
    filled = [r.getMessage() for r in caplog.records if "filled in" in r.getMessage()]
    assert len(filled) == 1 and "area for 4" in filled[0] and "iscrowd for 3" in filled[0] and \
        "id for 3" in filled[0] and "tool.json" in filled[0]
    assert ds[0][1].get_field("labels").tolist() == [1, 2] and ds[1][1].get_field("labels").tolist() == [3, 1]


def test_repeated_annotation_ids_are_made_unique(tmp_path):
    ann_file, root = write_tool_json(tmp_path, [(1, "a.png", 40, 30), (2, "b.png", 40, 30)], [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 5]},
        {"id": 1, "image_id": 2, "category_id": 7, "bbox": [5, 5, 10, 5]},  # per-image numbering
        {"id": "x", "image_id": 2, "category_id": 7, "bbox": [20, 5, 10, 5]},
    ])
    ds = COCODataset(ann_file, root, False)
    ids = [a["id"] for a in ds.coco.dataset["annotations"]]
    assert len(set(ids)) == 3 and all(isinstance(i, int) for i in ids)
    assert len(ds.coco.getAnnIds(imgIds=[1])) == 1 and len(ds.coco.getAnnIds(imgIds=[2])) == 2


def test_non_contiguous_ids_names_by_label(tmp_path, caplog):
    ann_file, root = write_tool_json(tmp_path, [(1, "a.png", 40, 30)], [
        {"image_id": 1, "category_id": c, "bbox": [1 + 5 * k, 1, 4, 4]} for k, c in enumerate((12, 3, 7))])
    with caplog.at_level(logging.INFO, logger="fcos_core.data.datasets.coco"):
        ds = COCODataset(ann_file, root, True)
    assert "1: cat (3), 2: dog (7), 3: bird (12)" in caplog.text  # the mapping, in the log
    assert ds.class_names == ["__background", "cat", "dog", "bird"]
    assert ds.json_category_id_to_contiguous_id == {3: 1, 7: 2, 12: 3}
    labels = ds[0][1].get_field("labels").tolist()
    assert [ds.class_names[label] for label in labels] == ["bird", "cat", "dog"]


def test_unusable_annotations_and_images_leave_the_evaluation_ground_truth(tmp_path):
    ann_file, root = write_tool_json(tmp_path, [(1, "a.png", 40, 30), (2, "b.png", 40, 30)], [
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 5]},
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, "w", 5]},   # bad box
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, 0, 5]},     # empty
        {"image_id": 1, "category_id": 99, "bbox": [1, 2, 4, 5]},    # unknown category
        {"image_id": 1, "category_id": 7, "bbox": [90, 2, 4, 5]},    # outside the image
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 9, 9], "iscrowd": 1},  # crowd: kept for evaluation
        {"image_id": 1, "category_id": 3, "bbox": None, "iscrowd": 1},          # crowd without box
        {"image_id": 1, "bbox": [1, 2, 4, 5]},                        # no category_id at all
    ])
    data = json.load(open(ann_file))
    data["images"].append({"id": 3, "file_name": "c.png"})  # no size
    json.dump(data, open(ann_file, "w"))
    ds = COCODataset(ann_file, root, False)
    assert ds.ids == [1, 2] and sorted(ds.coco.imgs) == [1, 2]
    kept = ds.coco.dataset["annotations"]
    assert sorted((a["bbox"], a["iscrowd"]) for a in kept) == [([0.0, 0.0, 9.0, 9.0], 1), ([1.0, 2.0, 10.0, 5.0], 0)]
    assert data_skip_counts(ds) == {"bad_box": 2, "empty_box": 1, "unknown_category": 1, "outside_image": 1,
                                    "bad_annotation": 1, "image_without_size": 1}


def test_file_names_with_sub_folders(tmp_path):
    ann_file, root = write_tool_json(tmp_path, [(1, "batch1/img.png", 40, 30), (2, "batch2/deep/img.png", 20, 30)], [
        {"image_id": 2, "category_id": 7, "bbox": [2, 3, 5, 6]}])
    data = json.load(open(ann_file))
    data["images"].append({"id": 3, "file_name": "batch2\\deep\\img.png", "width": 20, "height": 30})  # Windows
    json.dump(data, open(ann_file, "w"))
    ds = COCODataset(ann_file, root, False)
    assert [ds[i][0].size for i in range(3)] == [(40, 30), (20, 30), (20, 30)]
    assert (np.asarray(ds[2][0]) == 90).all()  # the file itself, not a placeholder
    assert ds[1][1].bbox.tolist() == [[2, 3, 6, 8]] and not data_skip_counts(ds)


def write_rotated_jpeg(path, orientation=6):
    """A JPEG displayed (EXIF applied) as 40x60 with a white square at x 5..14, y 30..49; stored 60x40."""
    shown = np.zeros((60, 40, 3), np.uint8)
    shown[30:50, 5:15] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90 if orientation == 6 else
                                              Image.Transpose.ROTATE_270)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stored.save(path, quality=95, exif=exif)
    return stored


def brightness_in(img, xyxy):
    x1, y1, x2, y2 = [int(round(float(v))) for v in xyxy]
    return float(np.asarray(img)[y1:y2 + 1, x1:x2 + 1].mean())


def test_exif_rotated_jpeg_read_as_annotation_tools_show_it(tmp_path, caplog):
    write_rotated_jpeg(str(tmp_path / "images" / "phone" / "r.jpg"))
    ann_file, root = write_tool_json(tmp_path, [(1, "phone/r.jpg", 40, 60)], [
        {"image_id": 1, "category_id": 3, "bbox": [5, 30, 10, 20]}])  # drawn on the displayed image
    ds = COCODataset(ann_file, root, True)
    with caplog.at_level(logging.WARNING):
        img, target, _ = ds[0]
    assert img.size == (40, 60) and target.bbox.tolist() == [[5, 30, 14, 49]]
    assert brightness_in(img, target.bbox[0]) > 240 and not caplog.records and not data_skip_counts(ds)


@pytest.mark.parametrize("orientation, stored_box", [(6, [30, 25, 20, 10]), (8, [10, 5, 20, 10])])
def test_json_of_the_unrotated_pixels_keeps_its_frame_and_warns_once(tmp_path, caplog, orientation, stored_box):
    stored = write_rotated_jpeg(str(tmp_path / "images" / "r.jpg"), orientation)
    assert brightness_in(stored, [stored_box[0], stored_box[1], stored_box[0] + stored_box[2] - 1,
                                  stored_box[1] + stored_box[3] - 1]) > 240  # the object, stored frame
    ann_file, root = write_tool_json(tmp_path, [(1, "r.jpg", 60, 40)], [
        {"image_id": 1, "category_id": 3, "bbox": stored_box}])  # a tool that ignored EXIF
    ds = COCODataset(ann_file, root, True)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            img, target, _ = ds[0]
    assert img.size == (60, 40) and brightness_in(img, target.bbox[0]) > 240
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "r.jpg" in warnings[0] and "EXIF orientation {}".format(orientation) in warnings[0]
    assert "unrotated" in warnings[0] and data_skip_counts(ds) == {"exif_orientation_not_applied": 1}


def test_sixteen_bit_and_rgba_images_load_as_rgb(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray((np.arange(30 * 40).reshape(30, 40) * 40).astype(np.uint16)).save(root / "deep.png")
    Image.fromarray(np.full((30, 40, 4), (10, 200, 30, 0), np.uint8), "RGBA").save(root / "alpha.png")
    ann_file, root = write_tool_json(tmp_path, [(1, "deep.png", 40, 30), (2, "alpha.png", 40, 30)], [])
    ds = COCODataset(ann_file, str(root), False)
    deep, alpha = np.asarray(ds[0][0]), np.asarray(ds[1][0])
    assert deep.shape == alpha.shape == (30, 40, 3)
    assert deep[0, 0, 0] == 0 and deep[-1, -1, 0] == 255 and 0 < deep[15, 20, 0] < 255  # scaled, not clipped
    assert tuple(alpha[5, 5]) == (10, 200, 30)


def test_unreadable_image_in_evaluation_keeps_its_index(tmp_path, caplog):
    ann_file, root = write_tool_json(tmp_path, [(1, "a.png", 40, 30), (2, "b.png", 20, 10)], [
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 5]}])
    (tmp_path / "images" / "a.png").write_bytes(b"broken")
    test = COCODataset(ann_file, root, False)
    with caplog.at_level(logging.WARNING):
        img, target, index = test[0]
        assert test[1][2] == 1
    assert index == 0 and img.size == (40, 30) and not np.asarray(img).any() and len(target) == 0
    assert "a.png" in caplog.text and "left out of the evaluation" in caplog.text
    assert test.failures.is_unreadable(0) and data_skip_counts(test) == {"unreadable_image": 1}
    train = COCODataset(ann_file, root, True)  # training: only a.png has a box, so nothing is left
    with pytest.raises(RuntimeError, match="none of its 1 images"):
        train[0]
