"""TEST.COCO_EVAL_BACKEND: pycocotools and faster-coco-eval give the same twelve numbers, per-class
AP and score thresholds (equal up to the last bits of a float64: the C++ accumulation sums in
another order, about 1e-16 apart) on COCODatasets with crowd boxes, images without ground truth (with and
without detections on them), a class without ground truth and boxes of every area range; the files
and the log say which one computed them; a missing faster-coco-eval is one error line naming the extra."""
import contextlib
import io
import json
import logging
import sys

import faster_coco_eval  # noqa: F401  (in the dev extra: these tests fail, never skip, without it)
import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from fcos_core.config import cfg as global_cfg
from fcos_core.data.datasets import COCODataset
from fcos_core.data.datasets.evaluation import evaluate
from fcos_core.data.datasets.evaluation.coco.backends import BACKENDS, resolve_backend, run_cocoeval
from fcos_core.engine.inference import inference
from fcos_core.structures import BoxList


# json ids need not be contiguous; "horse" has no ground truth at all
CATEGORIES = [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "bird"},
              {"id": 11, "name": "horse"}]
WITH_GT = (2, 5, 9)
EXACT = 1e-12  # "identical": float64 sums in another order differ in the last bits (1e-16), not more


def _random_box(rng, width, height):
    """[x, y, w, h] with a side drawn so that small (< 32^2), medium and large (> 96^2) areas all occur."""
    side = float(rng.choice([rng.uniform(4, 30), rng.uniform(35, 90), rng.uniform(100, 180)]))
    w, h = side * rng.uniform(0.7, 1.3), side * rng.uniform(0.7, 1.3)
    return [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]


def write_dataset(tmp_path, seed, num_images=30):
    """A COCO json of ``num_images`` images: every 5th without annotations, 10% crowd boxes.

    Returns:
        (COCODataset, list of annotation dicts)
    """
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        images.append({"id": 100 + i, "file_name": "{}.jpg".format(i), "width": 320, "height": 240})
        if i % 5 == 4:
            continue
        for _ in range(int(rng.integers(1, 7))):
            box = _random_box(rng, 320, 240)
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": int(rng.choice(WITH_GT)),
                         "bbox": box, "area": box[2] * box[3], "iscrowd": int(rng.random() < 0.1)})
    ann_file = tmp_path / "ann_{}.json".format(seed)
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return COCODataset(str(ann_file), str(tmp_path), remove_images_without_annotations=False), anns


def random_detections(dataset, anns, seed):
    """One BoxList (xyxy) per dataset index: jittered copies of the ground truth (crowd included),
    some with the wrong class, random false positives (also on images without ground truth and of
    the class without ground truth), scores uniform in (0, 1)."""
    rng = np.random.default_rng(seed + 1000)
    by_image = {}
    for a in anns:
        for _ in range(int(rng.integers(0, 3))):
            x, y, w, h = a["bbox"]
            jitter = rng.normal(0, 0.08 * max(w, h), 4)
            cat = a["category_id"] if rng.random() < 0.85 else int(rng.choice(WITH_GT))
            by_image.setdefault(a["image_id"], []).append((cat, [x + jitter[0], y + jitter[1],
                                                                 max(w + jitter[2], 1), max(h + jitter[3], 1)]))
    for image_id in dataset.ids:
        for _ in range(int(rng.integers(0, 4))):
            cat = int(rng.choice([c["id"] for c in CATEGORIES]))
            by_image.setdefault(image_id, []).append((cat, _random_box(rng, 320, 240)))
    return [_boxlist(by_image.get(image_id, []), rng, dataset) for image_id in dataset.ids]


def _boxlist(dets, rng, dataset):
    boxes = torch.tensor([d[1] for d in dets], dtype=torch.float32).reshape(-1, 4)
    boxlist = BoxList(boxes, (320, 240), mode="xywh").convert("xyxy")
    labels = [dataset.json_category_id_to_contiguous_id[d[0]] for d in dets]
    boxlist.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    boxlist.add_field("scores", torch.tensor(rng.uniform(0.01, 1, len(dets)), dtype=torch.float32))
    return boxlist


def evaluate_with(backend, dataset, predictions, out):
    results, coco_results = evaluate(dataset, predictions, str(out), coco_eval_backend=backend)
    read = lambda name: json.loads((out / name).read_text())  # noqa: E731
    return results, read("coco_results.json"), read("per_class_ap.json"), read("thresholds.json")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_backends_give_the_same_stats_per_class_ap_and_thresholds(tmp_path, seed):
    dataset, anns = write_dataset(tmp_path, seed)
    assert any(a["iscrowd"] for a in anns)
    predictions = random_detections(dataset, anns, seed)
    runs = {b: evaluate_with(b, dataset, predictions, tmp_path / b) for b in ("pycocotools", "faster_coco_eval")}
    (ref, ref_json, ref_ap, ref_thr), (fast, fast_json, fast_ap, fast_thr) = runs.values()
    stats = list(ref.results["bbox"].values())
    assert len(stats) == 12 and all(0 < s < 1 for s in stats)  # every area range has ground truth and hits
    assert list(fast.results["bbox"].values()) == pytest.approx(stats, rel=0, abs=EXACT)
    assert list(fast_json["bbox"].values()) == pytest.approx(list(ref_json["bbox"].values()), rel=0, abs=EXACT)
    assert list(ref_ap) == ["cat", "dog", "bird", "horse"] and ref_ap["horse"] is None  # no gt: null
    assert list(fast_ap) == list(ref_ap) and fast_ap["horse"] is None
    for name in ("cat", "dog", "bird"):
        assert 0 < ref_ap[name] < 1
        assert fast_ap[name] == pytest.approx(ref_ap[name], rel=0, abs=EXACT), name
    assert fast_thr["f_measures"] == pytest.approx(ref_thr["f_measures"], rel=0, abs=EXACT)
    assert {k: v for k, v in fast_thr.items() if k != "f_measures"} == {k: v for k, v in ref_thr.items()
                                                                       if k != "f_measures"}
    assert ref_thr["category_ids"] == [2, 5, 9, 11]
    assert ref_thr["thresholds"][3] == -1 and all(0 < t < 1 for t in ref_thr["thresholds"][:3])
    # the reference is pycocotools itself: the same numbers from the written bbox.json
    assert stats == pytest.approx(_pycocotools_stats(dataset.coco, tmp_path / "pycocotools" / "bbox.json"),
                                  rel=0, abs=0)


def _pycocotools_stats(coco_gt, bbox_json):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(json.loads(bbox_json.read_text())), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return list(coco_eval.stats)


def test_the_files_and_the_log_name_the_backend(tmp_path, caplog):
    dataset, anns = write_dataset(tmp_path, 3, num_images=6)
    predictions = random_detections(dataset, anns, 3)
    for backend in ("pycocotools", "faster_coco_eval"):
        with caplog.at_level(logging.INFO):
            results, saved, _, _ = evaluate_with(backend, dataset, predictions, tmp_path / backend)
        assert results.evaluator["backend"] == saved["evaluator"]["backend"] == backend
        assert saved["evaluator"]["version"][0].isdigit()
        assert (tmp_path / backend / "results.txt").read_text().startswith("Evaluated by " + backend)
        assert "COCO evaluation by {} ".format(backend) in caplog.text
    results, _ = evaluate(dataset, predictions, None)  # "auto" takes faster-coco-eval when installed
    assert results.evaluator["backend"] == "faster_coco_eval"


def test_no_detections_at_all_and_a_subset_of_images(tmp_path):
    dataset, anns = write_dataset(tmp_path, 4)
    empty = [BoxList(torch.zeros(0, 4), (320, 240)) for _ in dataset.ids]
    for p in empty:
        p.add_field("labels", torch.zeros(0, dtype=torch.int64))
        p.add_field("scores", torch.zeros(0))
    stats = {b: evaluate_with(b, dataset, empty, tmp_path / b)[0].results["bbox"] for b in ("pycocotools",
                                                                                          "faster_coco_eval")}
    assert stats["pycocotools"] == pytest.approx(stats["faster_coco_eval"], rel=0, abs=EXACT)
    assert set(stats["pycocotools"].values()) == {0.0}
    # img_ids: a subset of the images, detections on the others are ignored by both
    results = random_detections(dataset, anns, 4)
    coco_results = [{"image_id": dataset.ids[i], "category_id": dataset.contiguous_category_id_to_json_id[int(l)],
                     "bbox": b, "score": float(s)} for i, p in enumerate(results)
                    for b, l, s in zip(p.convert("xywh").bbox.tolist(), p.get_field("labels"), p.get_field("scores"))]
    subset = dataset.ids[::2]
    ref, fast = (run_cocoeval(dataset.coco, coco_results, img_ids=subset, backend=b)[0]
                 for b in ("pycocotools", "faster_coco_eval"))
    assert list(fast.stats) == pytest.approx(list(ref.stats), rel=0, abs=EXACT) and ref.params.imgIds == subset
    assert not np.allclose(ref.stats, run_cocoeval(dataset.coco, coco_results, backend="pycocotools")[0].stats)


def _without_faster_coco_eval(monkeypatch):
    """Make ``import faster_coco_eval`` fail as when the package is not installed."""
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
    with pytest.raises(ImportError):
        import faster_coco_eval  # noqa: F401


def test_a_missing_faster_coco_eval_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    dataset, anns = write_dataset(tmp_path, 5, num_images=5)
    predictions = random_detections(dataset, anns, 5)
    _without_faster_coco_eval(monkeypatch)
    with pytest.raises(ImportError) as err:
        evaluate(dataset, predictions, str(tmp_path / "out"), coco_eval_backend="faster_coco_eval")
    message = str(err.value)
    assert "\n" not in message and "fcos_core[eval]" in message and "faster-coco-eval" in message
    assert "TEST.COCO_EVAL_BACKEND" in message
    assert resolve_backend("auto") == "pycocotools"  # auto falls back to the reference
    results, _ = evaluate(dataset, predictions, None)
    assert results.evaluator["backend"] == "pycocotools"


def test_an_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="'pycoco'.*auto, pycocotools, faster_coco_eval"):
        resolve_backend("pycoco")
    assert global_cfg.TEST.COCO_EVAL_BACKEND == "auto" and BACKENDS[0] == "auto"


class _NeverIterated:
    """A data loader that fails if inference starts predicting."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        raise AssertionError("the backend must be checked before any image is predicted")


def test_inference_checks_the_backend_before_predicting(tmp_path, monkeypatch):
    dataset, _ = write_dataset(tmp_path, 6, num_images=3)
    _without_faster_coco_eval(monkeypatch)
    with pytest.raises(ImportError, match=r"fcos_core\[eval\]"):
        inference(torch.nn.Identity(), _NeverIterated(dataset), "tiny", device="cpu",
                  coco_eval_backend="faster_coco_eval")


def test_detections_on_an_image_the_ground_truth_lacks_are_refused_by_both(tmp_path):
    dataset, _ = write_dataset(tmp_path, 7, num_images=3)
    results = [{"image_id": 999, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.5}]
    with pytest.raises(ValueError, match=r"image ids that the ground truth does not have: \[999\]"):
        run_cocoeval(dataset.coco, results, backend="faster_coco_eval")
    with pytest.raises(AssertionError):  # pycocotools' loadRes: "Results do not correspond to current coco set"
        run_cocoeval(dataset.coco, results, backend="pycocotools")
