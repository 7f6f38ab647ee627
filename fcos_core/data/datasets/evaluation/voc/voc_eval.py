"""PASCAL VOC evaluation: per-class AP at one IoU threshold, 11-point (VOC2007) or area metric.

Semantics are those of the original FCOS / maskrcnn-benchmark ``voc_eval`` (itself from chainercv):
boxes are ``xyxy`` pixel-inclusive, the IoU uses the legacy ``+1`` widths (``x2 - x1 + 1``, as the
VOC devkit); detections of a class are taken in decreasing score order, each is matched to the
ground truth of highest IoU (>= ``iou_thresh``); a match to a ``difficult`` box is neither a true nor
a false positive, a second match to the same box is a false positive; ``difficult`` boxes do not
count in the number of positives.

Deviations from the original (on purpose):

- the original added 1 to x2, y2 and then called ``boxlist_iou``, which adds 1 again, so its boxes
  were ``x2 - x1 + 2`` wide; here the +1 is applied once, as the VOC devkit does;
- the original ``do_voc_evaluation`` dropped images without predictions together with their ground
  truth (so their objects did not count as missed); here every image's ground truth counts;
- no ground truth and no predictions at all gives ``{"ap": [], "map": nan}`` instead of a crash.
"""
import os
import warnings
from collections import defaultdict

import numpy as np
import torch

from fcos_core.structures.boxlist_ops import box_iou_legacy


def do_voc_evaluation(dataset, predictions, output_folder, logger):
    """VOC2007 (11-point) mAP at IoU 0.5 of ``predictions`` on ``dataset``; writes ``result.txt``.

    Arguments:
        dataset: has ``get_img_info(index)`` -> {"width", "height"}, ``get_groundtruth(index)`` ->
            BoxList (xyxy, original size) with fields "labels" [G] and "difficult" [G], and
            ``map_class_id_to_class_name(id)`` or ``CLASSES`` (index 0 is the background).
        predictions (list[BoxList]): one per dataset index, any image size, fields "labels" [N]
            (class ids) and "scores" [N].
        output_folder (str or None): where to write ``result.txt``.
        logger (logging.Logger): receives the result table.

    Returns:
        dict: "ap" (ndarray [C], nan for a class without non-difficult ground truth; C =
        len(dataset.CLASSES) when the dataset has CLASSES) and "map" (nanmean of "ap").
    """
    pred_boxlists, gt_boxlists = [], []
    for index, prediction in enumerate(predictions):
        info = dataset.get_img_info(index)
        pred_boxlists.append(prediction.resize((info["width"], info["height"])))
        gt_boxlists.append(dataset.get_groundtruth(index))
    result = eval_detection_voc(pred_boxlists, gt_boxlists, iou_thresh=0.5, use_07_metric=True)
    num_classes = len(getattr(dataset, "CLASSES", result["ap"]))
    if len(result["ap"]) < num_classes:
        result["ap"] = np.concatenate([result["ap"], np.full(num_classes - len(result["ap"]), np.nan)])
    result_str = "mAP: {:.4f}\n".format(result["map"])
    for class_id in range(1, len(result["ap"])):  # 0 is the background
        result_str += "{:<16}: {:.4f}\n".format(_class_name(dataset, class_id), result["ap"][class_id])
    logger.info(result_str)
    if output_folder:
        with open(os.path.join(output_folder, "result.txt"), "w") as fid:
            fid.write(result_str)
    return result


def _class_name(dataset, class_id):
    if hasattr(dataset, "map_class_id_to_class_name"):
        return dataset.map_class_id_to_class_name(class_id)
    classes = getattr(dataset, "CLASSES", None)
    return classes[class_id] if classes is not None else str(class_id)


def eval_detection_voc(pred_boxlists, gt_boxlists, iou_thresh=0.5, use_07_metric=False):
    """Per-class AP and mAP of detections against VOC ground truth.

    Arguments:
        pred_boxlists (list[BoxList]): per image, fields "labels" [N] (int class ids) and "scores" [N].
        gt_boxlists (list[BoxList]): per image (same order and image size as the predictions), fields
            "labels" [G] and "difficult" [G] (bool or 0/1).
        iou_thresh (float): a detection matches a ground-truth box when IoU >= iou_thresh.
        use_07_metric (bool): 11-point VOC2007 metric (True) or area under the interpolated
            precision/recall curve (False, the default as in the original).

    Returns:
        dict: "ap" (ndarray [max class id + 1]; nan for ids without non-difficult ground truth,
        including 0) and "map" (float, the mean over non-nan entries; nan if there is none).
    """
    if len(gt_boxlists) != len(pred_boxlists):
        raise ValueError("Length of gt and pred lists need to be same, got {} and {}".format(
            len(gt_boxlists), len(pred_boxlists)))
    prec, rec = calc_detection_voc_prec_rec(gt_boxlists, pred_boxlists, iou_thresh=iou_thresh)
    ap = calc_detection_voc_ap(prec, rec, use_07_metric=use_07_metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-nan: nan, no warning
        mean_ap = float(np.nanmean(ap)) if len(ap) else float("nan")
    return {"ap": ap, "map": mean_ap}


def calc_detection_voc_prec_rec(gt_boxlists, pred_boxlists, iou_thresh=0.5):
    """Precision and recall of each class along its detections sorted by decreasing score.

    Returns:
        (prec, rec): lists indexed by class id (length max id + 1). ``prec[l]`` is an ndarray [D_l]
        (nan where no detection counted yet, i.e. only difficult matches so far) or None for an id
        never seen; ``rec[l]`` is an ndarray [D_l] or None when class l has no non-difficult gt.
    """
    n_pos, score, match = defaultdict(int), defaultdict(list), defaultdict(list)
    for gt_boxlist, pred_boxlist in zip(gt_boxlists, pred_boxlists):
        pred_bbox, pred_label, pred_score = _as_numpy(pred_boxlist, "scores")
        gt_bbox, gt_label, gt_difficult = _as_numpy(gt_boxlist, "difficult")
        gt_difficult = gt_difficult.astype(bool)
        for label in np.unique(np.concatenate((pred_label, gt_label)).astype(int)):
            pred_mask, gt_mask = pred_label == label, gt_label == label
            order = pred_score[pred_mask].argsort()[::-1]
            n_pos[label] += int(np.logical_not(gt_difficult[gt_mask]).sum())
            score[label].extend(pred_score[pred_mask][order])
            match[label].extend(_match_one_class(
                pred_bbox[pred_mask][order], gt_bbox[gt_mask], gt_difficult[gt_mask], iou_thresh))
    return _precision_recall(n_pos, score, match)


def _as_numpy(boxlist, field):
    """(boxes [N, 4] xyxy float32, labels [N], ``field`` [N]) as numpy; a missing field of an empty list is empty."""
    boxes = boxlist.convert("xyxy").bbox.detach().cpu().numpy()

    def get(name):
        if len(boxlist) == 0 and not boxlist.has_field(name):
            return np.zeros(0)
        return boxlist.get_field(name).detach().cpu().numpy()

    return boxes, get("labels"), get(field)


def _match_one_class(pred_boxes, gt_boxes, gt_difficult, iou_thresh):
    """Match score-sorted detections [D, 4] of one class in one image to its gt [G, 4] (xyxy).

    Returns:
        list[int] of length D: 1 true positive, 0 false positive, -1 ignored (matched a difficult box).
    """
    if len(pred_boxes) == 0:
        return []
    if len(gt_boxes) == 0:
        return [0] * len(pred_boxes)
    iou = box_iou_legacy(torch.as_tensor(pred_boxes, dtype=torch.float32),
                         torch.as_tensor(gt_boxes, dtype=torch.float32)).numpy()
    gt_index = iou.argmax(axis=1)
    gt_index[iou.max(axis=1) < iou_thresh] = -1  # no matching ground truth
    selected = np.zeros(len(gt_boxes), dtype=bool)
    out = []
    for gt_idx in gt_index:
        if gt_idx < 0:
            out.append(0)
            continue
        if gt_difficult[gt_idx]:
            out.append(-1)
        else:
            out.append(0 if selected[gt_idx] else 1)
        selected[gt_idx] = True
    return out


def _precision_recall(n_pos, score, match):
    """Cumulative precision/recall per class from the per-detection scores and 1/0/-1 matches."""
    n_fg_class = max(n_pos.keys()) + 1 if n_pos else 0
    prec, rec = [None] * n_fg_class, [None] * n_fg_class
    for label in n_pos.keys():
        score_l = np.array(score[label])
        match_l = np.array(match[label], dtype=np.int8)[score_l.argsort()[::-1]]
        tp = np.cumsum(match_l == 1)
        fp = np.cumsum(match_l == 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            prec[label] = tp / (fp + tp)  # nan while only ignored detections were seen
        if n_pos[label] > 0:
            rec[label] = tp / n_pos[label]
    return prec, rec


def calc_detection_voc_ap(prec, rec, use_07_metric=False):
    """Average precision of each class from its precision/recall arrays.

    Arguments:
        prec, rec (list[ndarray or None]): as returned by :func:`calc_detection_voc_prec_rec`.
        use_07_metric (bool): mean of the best precision at recall >= t for t in 0, 0.1, ..., 1
            (VOC2007), else the area under the precision envelope (VOC2010+).

    Returns:
        ndarray [len(prec)]: AP per class, nan where ``prec[l]`` or ``rec[l]`` is None.
    """
    ap = np.full(len(prec), np.nan)
    for label, (p, r) in enumerate(zip(prec, rec)):
        if p is None or r is None:
            continue
        p = np.nan_to_num(p)
        ap[label] = _ap_11_point(p, r) if use_07_metric else _ap_area(p, r)
    return ap


def _ap_11_point(prec, rec):
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        ap += (np.max(prec[rec >= t]) if np.any(rec >= t) else 0.0) / 11
    return ap


def _ap_area(prec, rec):
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.where(mrec[1:] != mrec[:-1])[0]  # points where recall changes
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
