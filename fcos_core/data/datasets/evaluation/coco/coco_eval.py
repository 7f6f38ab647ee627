"""COCO-style evaluation of detections with pycocotools (the reference) or faster-coco-eval (same
numbers, faster): TEST.COCO_EVAL_BACKEND, see :mod:`.backends`.

Predictions are BoxLists, one per dataset index, in any image size: each is resized to the image's
original (width, height) from ``dataset.get_img_info(index)`` and converted to COCO's ``xywh``
(legacy pixel convention of BoxList: ``w = x2 - x1 + 1``). Labels are contiguous ids (1..K) and are
mapped back to json category ids with ``dataset.contiguous_category_id_to_json_id`` (json ids need
not be contiguous: 3, 7, 12 works); a label outside 1..K is dropped with a warning that counts them.

The images evaluated are the dataset's (``dataset.coco`` may list more): every index with a
prediction, images without ground truth included (negatives: a detection there is a false
positive). An index whose prediction is None, or whose image the dataset could not read
(``dataset.failures``), is left out with a warning naming the files. Category names come from the
ground truth's categories; a name that several categories share gets its json id appended
("car (id 7)") so that the per-class outputs keep one entry per category.

Files written into ``output_folder`` (when it is not None) by :func:`do_coco_evaluation`:

- ``bbox.json``: the detections in the COCO results format
  (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``);
- ``coco_results.json``: ``{"bbox": {"AP": .., ..., "ARl": ..}, "evaluator": {"backend": "faster_coco_eval",
  "version": "1.8.0"}}``, the twelve COCOeval numbers and which implementation computed them;
- ``results.txt``: the same as a table (its first line names the evaluator), followed by the per-class
  AP table;
- ``per_class_ap.json``: ``{category name: AP@[.5:.95]}``; ``null`` for a class without ground truth;
- ``thresholds.json``: per-class score thresholds of best F-measure (see
  :func:`compute_thresholds_for_classes`);
- ``box_proposals.json`` instead of all of these when ``box_only``.

Deviations from the original FCOS / maskrcnn-benchmark code (on purpose): no predictions at all is
evaluated (AP 0) instead of building an unusable empty results object; pycocotools' printing is
captured and sent to the logger; results are saved as json rather than a pickled ``COCOResults``;
``segm``/``keypoints`` are refused (FCOS predicts boxes only).
"""
import json
import logging
import math
import os
from collections import Counter, OrderedDict

import numpy as np
import torch

from fcos_core.structures.bounding_box import BoxList
from fcos_core.structures.boxlist_ops import boxlist_iou

from .backends import backend_version, resolve_backend, run_cocoeval

logger = logging.getLogger(__name__)


def do_coco_evaluation(dataset, predictions, box_only, output_folder, iou_types, expected_results,
                       expected_results_sigma_tol, backend="auto"):
    """Evaluate ``predictions`` on the COCO-format ``dataset`` (see the module docstring for files).

    Arguments:
        dataset: has ``coco`` (pycocotools COCO), ``ids`` or ``id_to_img_map`` (index -> image id),
            ``contiguous_category_id_to_json_id`` and ``get_img_info(index)`` -> {"width", "height"}.
        predictions (list[BoxList]): one per dataset index, fields "scores" [N] and "labels" [N]
            (contiguous ids), or "objectness" [N] when ``box_only``.
        box_only (bool): evaluate class-agnostic proposal recall instead of detection AP.
        output_folder (str or None): where to write the result files.
        iou_types (tuple[str]): only "bbox" is supported.
        expected_results, expected_results_sigma_tol: see :func:`check_expected_results`.
        backend (str): TEST.COCO_EVAL_BACKEND ("auto", "pycocotools" or "faster_coco_eval"); checked
            before any work (an ImportError naming the extra when faster-coco-eval is missing).

    Returns:
        (COCOResults, dict): the metrics (``results.evaluator`` names the backend and its version),
        and {iou_type: list of COCO-format detection dicts}
        (an empty dict when ``box_only``).
    """
    if box_only:
        return _do_box_proposal_evaluation(
            dataset, predictions, output_folder, expected_results, expected_results_sigma_tol)
    unsupported = [t for t in iou_types if t != "bbox"]
    if unsupported:
        raise NotImplementedError("FCOS predicts boxes only; iou_types {} are not supported".format(unsupported))
    backend = resolve_backend(backend)
    logger.info("Preparing bbox results for COCO format")
    coco_results = {"bbox": prepare_for_coco_detection(predictions, dataset)}
    img_ids = evaluated_image_ids(dataset, predictions)
    results = COCOResults(*iou_types)
    tables = []
    for iou_type in iou_types:
        json_file = os.path.join(output_folder, iou_type + ".json") if output_folder else None
        coco_eval = evaluate_predictions_on_coco(dataset.coco, coco_results[iou_type], json_file, iou_type,
                                                 img_ids=img_ids, backend=backend)
        results.update(coco_eval)
        results.evaluator = {"backend": backend, "version": backend_version(backend)}
        per_class = per_class_ap(coco_eval)
        tables.append(format_per_class_table(per_class))
        logger.info("Per-class %s AP@[.5:.95]:\n%s", iou_type, tables[-1])
        compute_thresholds_for_classes(coco_eval, output_folder)
        if output_folder:
            _write_json(os.path.join(output_folder, "per_class_ap.json"), _nan_to_none(per_class))
    evaluated_by = "Evaluated by {backend} {version}".format(**results.evaluator)
    logger.info("%s\n%s", evaluated_by, results)
    check_expected_results(results, expected_results, expected_results_sigma_tol)
    if output_folder:
        _write_json(os.path.join(output_folder, "coco_results.json"),
                    dict(results.as_dict(), evaluator=results.evaluator))
        with open(os.path.join(output_folder, "results.txt"), "w") as f:
            f.write("\n\n".join([evaluated_by + "\n" + repr(results)] + tables) + "\n")
    return results, coco_results


def image_id_of(dataset, index):
    """The json image id of dataset index ``index`` (``id_to_img_map`` as the original, else ``ids``)."""
    id_to_img_map = getattr(dataset, "id_to_img_map", None)
    if id_to_img_map is not None:
        return id_to_img_map[index]
    return dataset.ids[index]


def evaluated_image_ids(dataset, predictions):
    """The json image ids to evaluate: every dataset index except those whose prediction is None
    or whose image could not be read (``dataset.failures``, when it has one); those are named in a
    warning. Indices past the end of ``predictions`` count as images without detections."""
    failures = getattr(dataset, "failures", None)
    img_ids, left_out = [], []
    for index in range(len(dataset)):
        missing = index < len(predictions) and predictions[index] is None
        if missing or (failures is not None and failures.is_unreadable(index)):
            left_out.append(str(dataset.get_img_info(index).get("file_name", image_id_of(dataset, index))))
        else:
            img_ids.append(image_id_of(dataset, index))
    if left_out:
        logger.warning("%d of %d images are left out of the evaluation (unreadable or not predicted): %s%s",
                       len(left_out), len(dataset), ", ".join(left_out[:10]), " ..." if len(left_out) > 10 else "")
    return img_ids


def prepare_for_coco_detection(predictions, dataset):
    """Detections in the COCO results format.

    Arguments:
        predictions (list[BoxList or None]): index i holds the boxes of dataset index i, any image
            size and mode, with fields "scores" [N] and "labels" [N] (contiguous category ids 1..K);
            None for an image that was not predicted.
        dataset: see :func:`do_coco_evaluation`.

    Returns:
        list[dict]: ``{"image_id", "category_id" (json id), "bbox": [x, y, w, h] in pixels of the
        original image, "score"}``; images without predictions contribute nothing, nor do labels
        outside 1..K (counted in a warning).
    """
    coco_results, unknown = [], Counter()
    to_json_id = dataset.contiguous_category_id_to_json_id
    for index, prediction in enumerate(predictions):
        if prediction is None or len(prediction) == 0:
            continue
        info = dataset.get_img_info(index)
        prediction = prediction.resize((info["width"], info["height"])).convert("xywh")
        image_id = image_id_of(dataset, index)
        boxes = prediction.bbox.tolist()
        scores = prediction.get_field("scores").tolist()
        for box, score, label in zip(boxes, scores, prediction.get_field("labels").tolist()):
            if int(label) in to_json_id:
                coco_results.append({"image_id": image_id, "category_id": to_json_id[int(label)], "bbox": box,
                                     "score": score})
            else:
                unknown[int(label)] += 1
    if unknown:
        logger.warning("Dropped %d detections whose labels %s are not among the dataset's %d categories "
                       "(labels 1..%d): does MODEL.FCOS.NUM_CLASSES match the dataset?", sum(unknown.values()),
                       sorted(unknown), len(to_json_id), len(to_json_id))
    return coco_results


def evaluate_predictions_on_coco(coco_gt, coco_results, json_result_file=None, iou_type="bbox", img_ids=None,
                                 backend="auto"):
    """Run COCOeval (evaluate, accumulate, summarize) on a list of COCO-format results.

    Arguments:
        coco_gt (COCO): the ground truth.
        coco_results (list[dict]): see :func:`prepare_for_coco_detection`; may be empty (all AP 0).
        json_result_file (str or None): where to save ``coco_results`` as json.
        iou_type (str): "bbox".
        img_ids (list or None): the json image ids to evaluate; None: all of ``coco_gt``.
        backend (str): TEST.COCO_EVAL_BACKEND, see :mod:`.backends` ("auto", "pycocotools",
            "faster_coco_eval").

    Returns:
        COCOeval, summarized (``stats`` holds the twelve numbers, ``eval`` the accumulated arrays);
        its attribute ``backend`` names the implementation that computed them.
    """
    if json_result_file:
        _write_json(json_result_file, coco_results)
    coco_eval, backend, text = run_cocoeval(coco_gt, coco_results, iou_type, img_ids, backend)
    coco_eval.backend = backend
    logger.info("COCO evaluation by %s %s:\n%s", backend, backend_version(backend), text)
    return coco_eval


def per_class_ap(coco_eval):
    """AP@[.5:.95] (area all, 100 detections) of each category, from ``coco_eval.eval["precision"]``.

    Returns:
        OrderedDict {category name: AP}, in ``coco_eval.params.catIds`` order (sorted json ids).
        A class with ground truth but no correct detection has AP 0.0; a class without any ground
        truth has no precision (pycocotools' -1) and is reported as ``nan``.
    """
    precision = coco_eval.eval["precision"]  # [T iou thresholds, R recalls, K classes, A areas, M max dets]
    out = OrderedDict()
    names = category_names(coco_eval.cocoGt, coco_eval.params.catIds)
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[name] = float(p.mean()) if p.size else float("nan")
    return out


def category_names(coco_gt, cat_ids):
    """The name of each json category id in ``cat_ids`` (the id itself when it has none), made unique:
    a name shared by several categories gets " (id N)" appended."""
    names = [str(coco_gt.cats.get(c, {}).get("name", c)) for c in cat_ids]
    counts = Counter(names)
    return [name if counts[name] == 1 else "{} (id {})".format(name, c) for name, c in zip(names, cat_ids)]


def format_per_class_table(per_class, columns=3):
    """A text table of {name: AP} in ``columns`` pairs of columns (AP as a percentage, ``nan`` kept)."""
    items = list(per_class.items())
    width = max([len(name) for name, _ in items] + [8])
    header = " | ".join(["{:<{w}} {:>6}".format("category", "AP", w=width)] * min(columns, max(len(items), 1)))
    lines = [header, "-" * len(header)]
    for start in range(0, len(items), columns):
        cells = ["{:<{w}} {:>6.2f}".format(name, 100 * ap, w=width) for name, ap in items[start:start + columns]]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def compute_thresholds_for_classes(coco_eval, output_folder=None):
    """Per-class score threshold of best F-measure at IoU 0.5 (used by the demo to filter detections).

    As the original: precision P = ``eval["precision"][0, :, k, 0, -1]`` (IoU 0.5, area all,
    100 detections) at the R recall points R_r = linspace(0, 1, R); F = 2PR / max(P + R, 1e-6); the
    threshold is ``eval["scores"][0, r*, k, 0, -1]`` at r* = argmax F (the first one on ties).
    A class with ground truth but no detections gets 0; a class without ground truth gets -1.

    Arguments:
        coco_eval (COCOeval): accumulated.
        output_folder (str or None): where to write ``thresholds.json``
            ({"category_ids", "names", "thresholds", "f_measures"}, lists in class order).

    Returns:
        Tensor[K] float32: thresholds in ``coco_eval.params.catIds`` order (sorted json ids, i.e.
        contiguous label - 1 for a dataset that numbers its sorted categories 1..K).
    """
    precision = coco_eval.eval["precision"][0, :, :, 0, -1]  # [R, K]
    scores = coco_eval.eval["scores"][0, :, :, 0, -1]  # [R, K]
    recall = np.linspace(0, 1, num=precision.shape[0])[:, None]
    f_measure = (2 * precision * recall) / np.maximum(precision + recall, 1e-6)
    best = f_measure.argmax(axis=0)
    classes = np.arange(precision.shape[1])
    thresholds, max_f = scores[best, classes], f_measure[best, classes]
    logger.info("Maximum f-measures for classes: %s", [round(float(f), 4) for f in max_f])
    logger.info("Score thresholds for classes: %s", [round(float(t), 4) for t in thresholds])
    if output_folder:
        cat_ids = [int(c) for c in coco_eval.params.catIds]
        _write_json(os.path.join(output_folder, "thresholds.json"), {
            "category_ids": cat_ids,
            "names": category_names(coco_eval.cocoGt, cat_ids),
            "thresholds": [float(t) for t in thresholds],
            "f_measures": [float(f) for f in max_f],
        })
    return torch.as_tensor(thresholds, dtype=torch.float32)


# ---------------------------------------------------------------------------- box proposals
# area ranges in pixels^2, as the original (inspired by Detectron)
_PROPOSAL_AREAS = OrderedDict([
    ("all", (0 ** 2, 1e5 ** 2)), ("small", (0 ** 2, 32 ** 2)), ("medium", (32 ** 2, 96 ** 2)),
    ("large", (96 ** 2, 1e5 ** 2)), ("96-128", (96 ** 2, 128 ** 2)), ("128-256", (128 ** 2, 256 ** 2)),
    ("256-512", (256 ** 2, 512 ** 2)), ("512-inf", (512 ** 2, 1e5 ** 2)),
])


def _do_box_proposal_evaluation(dataset, predictions, output_folder, expected_results, sigma_tol):
    """AR@100 and AR@1000 for all/small/medium/large ground truth; writes ``box_proposals.json``."""
    logger.info("Evaluating bbox proposals")
    res = COCOResults("box_proposal")
    for limit in (100, 1000):
        for area, suffix in (("all", ""), ("small", "s"), ("medium", "m"), ("large", "l")):
            stats = evaluate_box_proposals(predictions, dataset, area=area, limit=limit)
            res.results["box_proposal"]["AR{}@{:d}".format(suffix, limit)] = stats["ar"].item()
    logger.info("\n%s", res)
    check_expected_results(res, expected_results, sigma_tol)
    if output_folder:
        _write_json(os.path.join(output_folder, "box_proposals.json"), res.as_dict())
    return res, {}


def evaluate_box_proposals(predictions, dataset, thresholds=None, area="all", limit=None):
    """Recall of class-agnostic proposals (faster than, and slightly different from, COCO's AR).

    Each non-crowd ground-truth box whose annotated area is in the ``area`` range is greedily matched
    to at most one proposal (the best-covered box first); recall at IoU t is the fraction of ground
    truth covered with IoU >= t.

    Arguments:
        predictions (list[BoxList]): proposals per dataset index with an "objectness" field [N].
        dataset: see :func:`do_coco_evaluation`.
        thresholds (Tensor[T] or None): IoU thresholds; default 0.5:0.05:0.95.
        area (str): a key of ``_PROPOSAL_AREAS``.
        limit (int or None): keep the ``limit`` proposals of highest objectness.

    Returns:
        dict: "ar" (0-dim tensor, mean recall), "recalls" [T], "thresholds" [T],
        "gt_overlaps" [G] (sorted best IoU of each matched gt), "num_pos" (int).
    """
    if area not in _PROPOSAL_AREAS:
        raise ValueError("Unknown area range: {}".format(area))
    area_range = _PROPOSAL_AREAS[area]
    gt_overlaps, num_pos = [], 0
    for index, prediction in enumerate(predictions):
        info = dataset.get_img_info(index)
        size = (info["width"], info["height"])
        gt_boxes = _proposal_gt_boxes(dataset, index, size, area_range)
        num_pos += len(gt_boxes)
        if len(gt_boxes) == 0 or prediction is None or len(prediction) == 0:
            continue
        prediction = prediction.resize(size)
        prediction = prediction[prediction.get_field("objectness").argsort(descending=True)]
        if limit is not None:
            prediction = prediction[:limit]
        gt_overlaps.append(_greedy_gt_coverage(boxlist_iou(prediction, gt_boxes)))
    gt_overlaps = torch.sort(torch.cat(gt_overlaps) if gt_overlaps else torch.zeros(0))[0]
    if thresholds is None:
        thresholds = torch.arange(0.5, 0.95 + 1e-5, 0.05, dtype=torch.float32)
    recalls = torch.stack([(gt_overlaps >= t).float().sum() / max(num_pos, 1) for t in thresholds])
    return {"ar": recalls.mean(), "recalls": recalls, "thresholds": thresholds,
            "gt_overlaps": gt_overlaps, "num_pos": num_pos}


def _proposal_gt_boxes(dataset, index, size, area_range):
    """BoxList (xyxy) of the non-crowd ground truth of ``index`` with annotated area in ``area_range``."""
    coco = dataset.coco
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id_of(dataset, index))) if a["iscrowd"] == 0]
    boxes = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    areas = torch.as_tensor([a["area"] for a in anns], dtype=torch.float32)
    keep = (areas >= area_range[0]) & (areas <= area_range[1])
    return BoxList(boxes, size, mode="xywh").convert("xyxy")[keep]


def _greedy_gt_coverage(overlaps):
    """Greedy one-to-one matching of IoUs [P proposals, G gt] -> Tensor[G] (0 for unmatched gt).

    Repeatedly takes the gt best covered by a still-free proposal and removes both.
    """
    overlaps = overlaps.clone()
    covered = torch.zeros(overlaps.shape[1])
    for j in range(min(overlaps.shape)):
        max_overlaps, argmax_overlaps = overlaps.max(dim=0)
        gt_ovr, gt_ind = max_overlaps.max(dim=0)
        box_ind = argmax_overlaps[gt_ind]
        covered[j] = gt_ovr
        overlaps[box_ind, :] = -1
        overlaps[:, gt_ind] = -1
    return covered


# ---------------------------------------------------------------------------- results
class COCOResults(object):
    """Named COCO metrics per task: ``results[iou_type]`` is an OrderedDict {metric name: value}.

    The bbox/segm names are the original's (AP, AP50, AP75, APs, APm, APl) followed by the six recall
    numbers of ``COCOeval.stats`` (AR1, AR10, AR100, ARs, ARm, ARl). Values are -1 until updated.
    """

    METRICS = {
        "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"],
        "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"],
        "box_proposal": ["AR@100", "ARs@100", "ARm@100", "ARl@100",
                         "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"],
        "keypoints": ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"],
    }

    def __init__(self, *iou_types):
        unknown = [t for t in iou_types if t not in self.METRICS]
        if unknown:
            raise ValueError("Unknown iou types {}; allowed: {}".format(unknown, sorted(self.METRICS)))
        self.results = OrderedDict(
            (iou_type, OrderedDict((metric, -1) for metric in self.METRICS[iou_type])) for iou_type in iou_types
        )
        # {"backend", "version"} of the COCOeval that computed the numbers (None: not from COCOeval)
        self.evaluator = None

    def update(self, coco_eval):
        """Copy the summarized ``coco_eval.stats`` into the task ``coco_eval.params.iouType``."""
        if coco_eval is None:
            return
        res = self.results[coco_eval.params.iouType]
        for metric, value in zip(res.keys(), coco_eval.stats):
            res[metric] = float(value)

    def as_dict(self):
        """{iou_type: {metric: float}} as plain dicts (json-serializable)."""
        return {task: dict(metrics) for task, metrics in self.results.items()}

    def __repr__(self):
        blocks = []
        for task, metrics in self.results.items():
            widths = [max(len(name), 6) for name in metrics]
            names = "  ".join("{:>{w}}".format(n, w=w) for n, w in zip(metrics, widths))
            values = "  ".join("{:>{w}.4f}".format(v, w=w) for v, w in zip(metrics.values(), widths))
            blocks.append("Task: {}\n{}\n{}".format(task, names, values))
        return "\n".join(blocks)


def check_expected_results(results, expected_results, sigma_tol):
    """Log PASS/FAIL for each expected (task, metric, (mean, std)): pass when |actual - mean| < tol * std.

    Returns:
        bool: True when every check passed (or there is none).
    """
    all_ok = True
    for task, metric, (mean, std) in expected_results:
        actual = results.results[task][metric]
        lo, hi = mean - sigma_tol * std, mean + sigma_tol * std
        ok = lo < actual < hi
        msg = ("{} > {} sanity check (actual vs. expected): "
               "{:.3f} vs. mean={:.4f}, std={:.4}, range=({:.4f}, {:.4f})").format(
                   task, metric, actual, mean, std, lo, hi)
        if ok:
            logger.info("PASS: " + msg)
        else:
            logger.error("FAIL: " + msg)
        all_ok = all_ok and ok
    return all_ok


def _nan_to_none(values):
    """{k: float} with nan replaced by None (json has no nan)."""
    return OrderedDict((k, None if math.isnan(v) else v) for k, v in values.items())


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
