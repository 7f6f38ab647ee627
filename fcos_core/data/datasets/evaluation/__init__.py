"""Evaluation of detections, dispatched on the dataset type: COCO format (pycocotools or
faster-coco-eval, TEST.COCO_EVAL_BACKEND) or PASCAL VOC.

The dispatch is by interface rather than by class, so any dataset in COCO json format works:

- a dataset with a ``coco`` attribute (pycocotools COCO) -> :func:`coco.coco_evaluation`;
- a dataset with ``get_groundtruth`` and no ``coco`` -> :func:`voc.voc_evaluation`.

Predictions are also saved by :func:`evaluate` as ``predictions.pth`` in a form that loads with
``torch.load(path, weights_only=True)``; :func:`load_predictions` turns it back into BoxLists.
"""
import os

import torch

from fcos_core.structures.bounding_box import BoxList

from .coco import coco_evaluation
from .voc import voc_evaluation


def evaluate(dataset, predictions, output_folder, box_only=False, iou_types=("bbox",), expected_results=(),
             expected_results_sigma_tol=4, coco_eval_backend="auto"):
    """Evaluate ``predictions`` on ``dataset`` with the method of its type.

    Arguments:
        dataset: a COCO-format dataset (has ``coco``) or a VOC dataset (has ``get_groundtruth``).
        predictions (list[BoxList]): one per dataset index, any image size (each is resized to the
            image's original size), fields "scores" [N] and "labels" [N] (contiguous class ids).
        output_folder (str or None): created if missing; receives ``predictions.pth`` and the files
            of the evaluation (COCO: bbox.json, coco_results.json, results.txt, per_class_ap.json,
            thresholds.json; VOC: result.txt).
        box_only, iou_types, expected_results, expected_results_sigma_tol: COCO only (see
            :func:`coco.coco_evaluation`); VOC ignores them.
        coco_eval_backend (str): TEST.COCO_EVAL_BACKEND, the COCOeval implementation ("auto",
            "pycocotools", "faster_coco_eval"); VOC ignores it.

    Returns:
        COCO: (COCOResults, {iou_type: list of result dicts}); VOC: {"ap": ndarray, "map": float}.
    """
    if output_folder:
        os.makedirs(output_folder, exist_ok=True)
        save_predictions(predictions, os.path.join(output_folder, "predictions.pth"))
    if getattr(dataset, "coco", None) is not None:
        return coco_evaluation(
            dataset, predictions, output_folder, box_only=box_only, iou_types=iou_types,
            expected_results=expected_results, expected_results_sigma_tol=expected_results_sigma_tol,
            backend=coco_eval_backend)
    if hasattr(dataset, "get_groundtruth"):
        return voc_evaluation(dataset, predictions, output_folder, box_only=box_only)
    raise NotImplementedError(
        "Unsupported dataset type {}: expected a COCO-format dataset (with a `coco` attribute) or a "
        "VOC dataset (with `get_groundtruth`)".format(dataset.__class__.__name__))


def save_predictions(predictions, path):
    """Save BoxLists as a list of plain dicts (loadable with ``torch.load(path, weights_only=True)``).

    Each entry is ``{"boxes": Tensor[N, 4] float32 xyxy, "image_size": (width, height),
    <field>: Tensor[N, ...] for every tensor field}`` (e.g. "scores", "labels"), on the CPU.
    Non-tensor fields are dropped.
    """
    torch.save([_boxlist_to_dict(p) for p in predictions], path)


def _boxlist_to_dict(boxlist):
    out = {k: v.detach().cpu() for k, v in boxlist.extra_fields.items() if isinstance(v, torch.Tensor)}
    out["boxes"] = boxlist.convert("xyxy").bbox.detach().cpu()
    out["image_size"] = tuple(int(s) for s in boxlist.size)
    return out


def load_predictions(path):
    """The BoxLists (xyxy, with their tensor fields) saved by :func:`save_predictions`."""
    boxlists = []
    for entry in torch.load(path, weights_only=True):
        boxlist = BoxList(entry["boxes"], entry["image_size"], mode="xyxy")
        for name, value in entry.items():
            if name not in ("boxes", "image_size"):
                boxlist.add_field(name, value)
        boxlists.append(boxlist)
    return boxlists


__all__ = ["coco_evaluation", "evaluate", "load_predictions", "save_predictions", "voc_evaluation"]
