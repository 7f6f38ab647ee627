"""COCO evaluation of a COCODataset read from an annotation tool's json (no area, no iscrowd),
with non-contiguous category ids (3, 7, 12): per-class AP by name, json ids in bbox.json, images
without annotations evaluated as negatives, images left out, labels outside the classes dropped."""
import json
import logging
import os

import pytest
import torch

from fcos_core.data.datasets import COCODataset
from fcos_core.data.datasets.evaluation import evaluate
from fcos_core.data.datasets.skips import ImageFailures
from fcos_core.structures import BoxList

CATEGORIES = [{"id": 12, "name": "bird"}, {"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
IMAGES = [(1, "batch1/a.jpg", 200, 100), (2, "b.jpg", 160, 120), (3, "empty.jpg", 100, 100)]
# (image id, json category id, [x, y, w, h]) as a tool writes them: no area, iscrowd or segmentation
BOXES = [(1, 3, [10, 10, 40, 30]), (1, 7, [100, 20, 60, 60]), (2, 12, [50, 40, 100, 70]), (2, 3, [0, 0, 20, 20])]


def tool_dataset(tmp_path, categories=CATEGORIES):
    data = {"images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in IMAGES],
            "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b}
                            for k, (i, c, b) in enumerate(BOXES)],
            "categories": categories}
    ann_file = tmp_path / "tool.json"
    ann_file.write_text(json.dumps(data))
    return COCODataset(str(ann_file), str(tmp_path), remove_images_without_annotations=False)


def predictions(dataset, dets):
    """One BoxList per dataset index from ``dets``: {image id: [(json category id, [x, y, w, h], score)]}."""
    out = []
    for index in range(len(dataset)):
        info = dataset.get_img_info(index)
        rows = dets.get(dataset.id_to_img_map[index], [])
        boxlist = BoxList(torch.tensor([r[1] for r in rows], dtype=torch.float32).reshape(-1, 4),
                          (info["width"], info["height"]), mode="xywh").convert("xyxy")
        boxlist.add_field("labels", torch.tensor([dataset.json_category_id_to_contiguous_id.get(r[0], r[0])
                                                  for r in rows], dtype=torch.int64))
        boxlist.add_field("scores", torch.tensor([r[2] for r in rows], dtype=torch.float32))
        out.append(boxlist)
    return out


def perfect(score=0.9):
    dets = {}
    for image_id, cat, box in BOXES:
        dets.setdefault(image_id, []).append((cat, box, score))
    return dets


def test_perfect_detections_give_ap_1_per_class_by_name(tmp_path):
    dataset = tool_dataset(tmp_path)
    assert dataset.ids == [1, 2, 3] and dataset.class_names == ["__background", "cat", "dog", "bird"]
    out = tmp_path / "out"
    results, coco_results = evaluate(dataset, predictions(dataset, perfect()), str(out))
    assert results.results["bbox"]["AP"] == pytest.approx(1.0)
    per_class = json.loads((out / "per_class_ap.json").read_text())
    assert per_class == pytest.approx({"cat": 1.0, "dog": 1.0, "bird": 1.0})
    assert list(per_class) == ["cat", "dog", "bird"]  # sorted json ids 3, 7, 12
    written = json.loads((out / "bbox.json").read_text())
    assert sorted((r["image_id"], r["category_id"], r["bbox"]) for r in written) == sorted(
        (i, c, [float(v) for v in b]) for i, c, b in BOXES)  # COCO results format, json category ids
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert thresholds["category_ids"] == [3, 7, 12] and thresholds["names"] == ["cat", "dog", "bird"]
    table = (out / "results.txt").read_text()
    for name in ("cat", "dog", "bird"):
        assert "{:<8} {:>6.2f}".format(name, 100.0) in table


def test_one_class_wrong(tmp_path):
    dataset = tool_dataset(tmp_path)
    dets = perfect()
    dets[1] = [(12 if c == 7 else c, b, s) for c, b, s in dets[1]]  # the dog called a bird
    evaluate(dataset, predictions(dataset, dets), str(tmp_path / "out"))
    per_class = json.loads((tmp_path / "out" / "per_class_ap.json").read_text())
    # dog: missed; bird: a false positive (image 1) ranked with its true one (image 2) at the same
    # score, first in image order as pycocotools sorts: precision 1/2 at recall 1
    assert per_class == pytest.approx({"cat": 1.0, "dog": 0.0, "bird": 0.5})


def test_false_positive_on_an_image_without_annotations_lowers_ap(tmp_path):
    dataset = tool_dataset(tmp_path)
    dets = perfect(score=0.5)
    clean, _ = evaluate(dataset, predictions(dataset, dets), None)
    dets[3] = [(3, [10, 10, 30, 30], 0.9)]  # a cat on the empty image, above the true ones
    noisy, _ = evaluate(dataset, predictions(dataset, dets), str(tmp_path / "out"))
    assert clean.results["bbox"]["AP"] == pytest.approx(1.0)
    per_class = json.loads((tmp_path / "out" / "per_class_ap.json").read_text())
    # cat: FP (0.9), TP, TP -> precision 2/3 at every recall
    assert per_class == pytest.approx({"cat": 2 / 3, "dog": 1.0, "bird": 1.0})
    assert noisy.results["bbox"]["AP"] == pytest.approx((2 / 3 + 2) / 3)


def test_unpredicted_and_unreadable_images_are_left_out_and_named(tmp_path, caplog):
    dataset = tool_dataset(tmp_path)
    dets = perfect()
    dets[3] = [(3, [10, 10, 30, 30], 0.9)]
    preds = predictions(dataset, dets)
    preds[2] = None  # the empty image was not predicted: its false positive is gone with it
    with caplog.at_level(logging.WARNING):
        results, _ = evaluate(dataset, preds, None)
    assert results.results["bbox"]["AP"] == pytest.approx(1.0)
    assert "1 of 3 images are left out" in caplog.text and "empty.jpg" in caplog.text
    preds = predictions(dataset, perfect())
    preds[1] = predictions(dataset, {})[1]  # nothing found on b.jpg ...
    dataset.failures.mark(1, ImageFailures.UNREADABLE)  # ... as it could not be read: not counted as misses
    results, _ = evaluate(dataset, preds, None)
    assert results.results["bbox"]["AP"] == pytest.approx(1.0) and "b.jpg" in caplog.text


def test_labels_outside_the_classes_are_dropped_with_a_warning(tmp_path, caplog):
    dataset = tool_dataset(tmp_path)
    dets = perfect()
    dets[1].append((80, [0, 0, 10, 10], 0.99))  # label 80 of an 80-class model: not a json category
    with caplog.at_level(logging.WARNING):
        results, coco_results = evaluate(dataset, predictions(dataset, dets), None)
    assert results.results["bbox"]["AP"] == pytest.approx(1.0) and len(coco_results["bbox"]) == len(BOXES)
    assert "Dropped 1 detections whose labels [80]" in caplog.text and "NUM_CLASSES" in caplog.text


def test_shared_names_stay_apart(tmp_path):
    dataset = tool_dataset(tmp_path, [{"id": 12, "name": "bird"}, {"id": 7, "name": "pet"}, {"id": 3, "name": "pet"}])
    dets = perfect()
    dets[1] = [d for d in dets[1] if d[0] != 7]  # every dog missed
    evaluate(dataset, predictions(dataset, dets), str(tmp_path / "out"))
    per_class = json.loads((tmp_path / "out" / "per_class_ap.json").read_text())
    assert per_class == pytest.approx({"pet (id 3)": 1.0, "pet (id 7)": 0.0, "bird": 1.0})
    assert os.path.isfile(tmp_path / "out" / "results.txt")


def test_box_proposal_recall_on_a_tool_json(tmp_path):
    dataset = tool_dataset(tmp_path)
    proposals = []
    for pred in predictions(dataset, perfect()):
        proposal = pred.copy_with_fields([])
        proposal.add_field("objectness", torch.ones(len(pred)))
        proposals.append(proposal)
    results, _ = evaluate(dataset, proposals, None, box_only=True)  # reads iscrowd and area of each box
    assert results.results["box_proposal"]["AR@100"] == pytest.approx(1.0)
