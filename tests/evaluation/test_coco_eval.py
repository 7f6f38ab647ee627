"""COCO evaluation: against pycocotools run directly, perfect/empty/resized predictions, per-class AP,
best-F-measure thresholds, written files, box-proposal recall and the dataset-type dispatch."""
import contextlib
import io
import json
import logging

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fcos_core.data.datasets.evaluation import evaluate, load_predictions
from fcos_core.data.datasets.evaluation.coco.coco_eval import (
    COCOResults,
    check_expected_results,
    compute_thresholds_for_classes,
    evaluate_predictions_on_coco,
)
from fcos_core.structures import BoxList

METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 90, "name": "zebra"}]
IMAGES = [{"id": 10, "width": 200, "height": 100}, {"id": 20, "width": 160, "height": 120},
          {"id": 35, "width": 300, "height": 200}]


def make_coco(images, categories, boxes):
    """A pycocotools COCO from ``boxes``: list of (image_id, category_id, [x, y, w, h], iscrowd)."""
    anns = [{"id": i + 1, "image_id": img, "category_id": cat, "bbox": list(map(float, bbox)),
             "area": float(bbox[2] * bbox[3]), "iscrowd": crowd} for i, (img, cat, bbox, crowd) in enumerate(boxes)]
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class FakeCOCODataset(object):
    """The interface of COCODataset that evaluation uses."""

    def __init__(self, coco):
        self.coco = coco
        self.ids = sorted(coco.imgs.keys())
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(sorted(coco.getCatIds()))}
        self.contiguous_category_id_to_json_id = {v: k for k, v in self.json_category_id_to_contiguous_id.items()}

    def __len__(self):
        return len(self.ids)

    def get_img_info(self, index):
        return self.coco.imgs[self.ids[index]]


def default_dataset():
    return FakeCOCODataset(make_coco(IMAGES, CATEGORIES, [
        (10, 1, [10, 10, 40, 30], 0), (10, 5, [100, 20, 60, 60], 0),
        (20, 1, [0, 0, 20, 20], 0), (20, 90, [50, 40, 100, 70], 0),
        (35, 5, [20, 30, 150, 120], 0), (35, 1, [200, 100, 50, 50], 0), (35, 1, [0, 0, 10, 10], 1),
    ]))


def boxlist_from_xywh(dets, size, to_contiguous):
    """BoxList (xyxy) of ``dets``: list of (json category id, [x, y, w, h], score)."""
    boxes = torch.tensor([d[1] for d in dets], dtype=torch.float32).reshape(-1, 4)
    boxlist = BoxList(boxes, size, mode="xywh").convert("xyxy")
    boxlist.add_field("labels", torch.tensor([to_contiguous[d[0]] for d in dets], dtype=torch.int64))
    boxlist.add_field("scores", torch.tensor([d[2] for d in dets], dtype=torch.float32))
    return boxlist


def gt_as_predictions(dataset):
    """Every non-crowd ground-truth box as a detection of score 1."""
    preds = []
    for index, image_id in enumerate(dataset.ids):
        anns = [a for a in dataset.coco.imgToAnns[image_id] if not a["iscrowd"]]
        info = dataset.get_img_info(index)
        dets = [(a["category_id"], a["bbox"], 1.0) for a in anns]
        size = (info["width"], info["height"])
        preds.append(boxlist_from_xywh(dets, size, dataset.json_category_id_to_contiguous_id))
    return preds


# per image id: (json category id, [x, y, w, h], score); scores are exact in float32
HAND_DETECTIONS = {
    10: [(1, [12, 10, 40, 30], 0.875), (5, [0, 60, 30, 30], 0.75), (1, [10, 10, 40, 30], 0.125)],
    20: [],
    35: [(5, [20, 30, 150, 120], 0.5), (5, [25, 35, 140, 110], 0.625), (90, [200, 100, 50, 50], 0.9375),
         (1, [190, 95, 55, 60], 0.25), (1, [0, 0, 10, 10], 0.375)],
}


def hand_predictions(dataset):
    return [boxlist_from_xywh(HAND_DETECTIONS[image_id], (img["width"], img["height"]),
                              dataset.json_category_id_to_contiguous_id)
            for image_id, img in ((i, dataset.coco.imgs[i]) for i in dataset.ids)]


def pycocotools_stats(coco_gt, results):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes([dict(r) for r in results]), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_ground_truth_as_predictions_gives_ap_1_and_writes_files(tmp_path):
    dataset = default_dataset()
    preds = gt_as_predictions(dataset)
    results, coco_results = evaluate(dataset, preds, str(tmp_path))
    bbox = results.results["bbox"]
    assert list(bbox.keys()) == METRICS
    assert [bbox["AP"], bbox["AP50"], bbox["AP75"]] == pytest.approx([1.0, 1.0, 1.0])

    written = json.loads((tmp_path / "bbox.json").read_text())
    assert written == coco_results["bbox"]
    assert sorted({r["category_id"] for r in written}) == [1, 5, 90]  # json ids, not contiguous ones
    non_crowd = [a for a in dataset.coco.dataset["annotations"] if not a["iscrowd"]]
    assert sorted((r["image_id"], r["category_id"], r["bbox"]) for r in written) == \
        sorted((a["image_id"], a["category_id"], a["bbox"]) for a in non_crowd)

    raw = torch.load(str(tmp_path / "predictions.pth"), weights_only=True)
    assert len(raw) == len(preds) and set(raw[0]) == {"boxes", "scores", "labels", "image_size"}
    for loaded, pred in zip(load_predictions(str(tmp_path / "predictions.pth")), preds):
        assert torch.equal(loaded.bbox, pred.bbox) and loaded.size == pred.size
        assert torch.equal(loaded.get_field("labels"), pred.get_field("labels"))

    assert json.loads((tmp_path / "coco_results.json").read_text())["bbox"]["AP"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "per_class_ap.json").read_text()) == pytest.approx(
        {"cat": 1.0, "dog": 1.0, "zebra": 1.0})
    assert "AP50" in (tmp_path / "results.txt").read_text()
    assert json.loads((tmp_path / "thresholds.json").read_text())["category_ids"] == [1, 5, 90]


def test_hand_made_case_matches_pycocotools_run_directly():
    dataset = default_dataset()
    results, coco_results = evaluate(dataset, hand_predictions(dataset), None)
    by_hand = [{"image_id": img, "category_id": cat, "bbox": [float(v) for v in bbox], "score": score}
               for img, dets in HAND_DETECTIONS.items() for cat, bbox, score in dets]
    expected = pycocotools_stats(dataset.coco, by_hand)
    actual = [results.results["bbox"][m] for m in METRICS]
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)
    assert 0 < results.results["bbox"]["AP"] < 1  # a non-trivial case
    assert sorted(coco_results["bbox"], key=lambda r: r["score"]) == sorted(by_hand, key=lambda r: r["score"])


def empty_boxlist(size):
    boxlist = BoxList(torch.zeros(0, 4), size)
    boxlist.add_field("labels", torch.zeros(0, dtype=torch.int64))
    boxlist.add_field("scores", torch.zeros(0))
    return boxlist


@pytest.mark.parametrize("no_list", [False, True])
def test_no_predictions_gives_ap_0(tmp_path, no_list):
    dataset = default_dataset()
    preds = [] if no_list else [empty_boxlist((i["width"], i["height"])) for i in IMAGES]
    results, coco_results = evaluate(dataset, preds, str(tmp_path))
    bbox = results.results["bbox"]
    assert bbox["AP"] == 0 and bbox["AP50"] == 0 and bbox["AR100"] == 0
    assert coco_results["bbox"] == [] and json.loads((tmp_path / "bbox.json").read_text()) == []
    assert json.loads((tmp_path / "per_class_ap.json").read_text()) == {"cat": 0.0, "dog": 0.0, "zebra": 0.0}


def test_predictions_in_resized_images_are_rescaled():
    dataset = default_dataset()
    preds = hand_predictions(dataset)
    # the same boxes in a (w / 2, h / 4) image, as a model fed a resized image would give them
    resized = []
    for pred in preds:
        w, h = pred.size
        small = BoxList(pred.bbox * torch.tensor([0.5, 0.25, 0.5, 0.25]), (w // 2, h // 4))
        for field in pred.fields():
            small.add_field(field, pred.get_field(field))
        resized.append(small)
    expected, expected_json = evaluate(dataset, preds, None)
    actual, actual_json = evaluate(dataset, resized, None)
    assert actual.results == expected.results
    assert actual_json == expected_json


def test_per_class_ap_perfect_missing_and_absent_classes(tmp_path):
    dataset = FakeCOCODataset(make_coco(IMAGES, CATEGORIES, [
        (10, 1, [10, 10, 40, 30], 0), (35, 1, [200, 100, 50, 50], 0), (20, 5, [0, 0, 20, 20], 0)]))
    to_contiguous = dataset.json_category_id_to_contiguous_id
    preds = [boxlist_from_xywh([(1, [10, 10, 40, 30], 0.5)], (200, 100), to_contiguous),
             empty_boxlist((160, 120)),
             boxlist_from_xywh([(1, [200, 100, 50, 50], 0.5)], (300, 200), to_contiguous)]
    evaluate(dataset, preds, str(tmp_path))
    # cat: all found; dog: ground truth, no detection -> 0; zebra: no ground truth -> nan (json null)
    assert json.loads((tmp_path / "per_class_ap.json").read_text()) == {"cat": 1.0, "dog": 0.0, "zebra": None}
    table = (tmp_path / "results.txt").read_text()
    assert "cat" in table and "nan" in table


def test_compute_thresholds_for_classes_best_f_measure(tmp_path):
    categories = [{"id": 1, "name": "cat"}, {"id": 3, "name": "bird"}, {"id": 5, "name": "dog"},
                  {"id": 90, "name": "zebra"}]
    coco = make_coco([{"id": 7, "width": 400, "height": 400}], categories, [
        (7, 1, [0, 0, 50, 50], 0), (7, 1, [100, 0, 50, 50], 0), (7, 5, [0, 200, 60, 60], 0),
        (7, 90, [200, 100, 80, 80], 0)])
    dets = [  # cat: TP, FP, TP, FP -> best F 0.8 at recall 1, score 0.625
        (1, [0, 0, 50, 50], 0.875), (1, [300, 300, 40, 40], 0.75), (1, [100, 0, 50, 50], 0.625),
        (1, [300, 200, 40, 40], 0.5),
        (5, [200, 300, 30, 30], 0.875), (5, [0, 200, 60, 60], 0.5),  # dog: FP, TP -> F 2/3 at 0.5
        (90, [200, 100, 80, 80], 0.9375)]  # zebra: TP -> F 1 at 0.9375
    results = [{"image_id": 7, "category_id": c, "bbox": b, "score": s} for c, b, s in dets]
    coco_eval = evaluate_predictions_on_coco(coco, results)
    thresholds = compute_thresholds_for_classes(coco_eval, str(tmp_path))
    # bird has no ground truth: -1 as in the original
    assert thresholds.tolist() == [0.625, -1.0, 0.5, 0.9375]
    written = json.loads((tmp_path / "thresholds.json").read_text())
    assert written["names"] == ["cat", "bird", "dog", "zebra"]
    assert written["f_measures"] == pytest.approx([0.8, 0.0, 2 / 3, 1.0])


def test_box_only_proposal_recall(tmp_path):
    dataset = default_dataset()
    proposals = []
    for pred in gt_as_predictions(dataset):
        proposal = pred.copy_with_fields([])
        proposal.add_field("objectness", torch.rand(len(pred)))
        proposals.append(proposal)
    results, _ = evaluate(dataset, proposals, str(tmp_path), box_only=True)
    assert results.results["box_proposal"]["AR@100"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "box_proposals.json").read_text())["box_proposal"]["AR@1000"] == pytest.approx(1.0)


def test_check_expected_results_logs_pass_and_fail(caplog):
    results = COCOResults("bbox")
    results.results["bbox"]["AP"] = 0.385
    with caplog.at_level(logging.INFO):
        assert check_expected_results(results, [("bbox", "AP", (0.38, 0.002))], 4)
        assert not check_expected_results(results, [("bbox", "AP", (0.40, 0.002))], 4)
    assert "PASS" in caplog.text and "FAIL" in caplog.text
    assert "AP50" in repr(results) and "Task: bbox" in repr(results)


def test_unsupported_inputs_raise():
    with pytest.raises(NotImplementedError, match="Unsupported dataset type"):
        evaluate(object(), [], None)
    with pytest.raises(NotImplementedError, match="segm"):
        evaluate(default_dataset(), [], None, iou_types=("bbox", "segm"))
