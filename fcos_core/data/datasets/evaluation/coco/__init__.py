"""COCO-format evaluation (pycocotools or faster-coco-eval): entry point :func:`coco_evaluation`."""
from .coco_eval import (
    COCOResults,
    check_expected_results,
    compute_thresholds_for_classes,
    do_coco_evaluation,
    evaluate_box_proposals,
    evaluate_predictions_on_coco,
    per_class_ap,
    prepare_for_coco_detection,
)


def coco_evaluation(dataset, predictions, output_folder, box_only=False, iou_types=("bbox",),
                    expected_results=(), expected_results_sigma_tol=4, backend="auto"):
    """Evaluate ``predictions`` (list[BoxList], one per dataset index) on a COCO-format dataset.

    See :func:`fcos_core.data.datasets.evaluation.coco.coco_eval.do_coco_evaluation`; ``backend`` is
    TEST.COCO_EVAL_BACKEND ("auto", "pycocotools", "faster_coco_eval").

    Returns:
        (COCOResults, dict {iou_type: list of COCO-format detection dicts}).
    """
    return do_coco_evaluation(
        dataset=dataset,
        predictions=predictions,
        box_only=box_only,
        output_folder=output_folder,
        iou_types=iou_types,
        expected_results=expected_results,
        expected_results_sigma_tol=expected_results_sigma_tol,
        backend=backend,
    )


__all__ = [
    "COCOResults",
    "check_expected_results",
    "coco_evaluation",
    "compute_thresholds_for_classes",
    "do_coco_evaluation",
    "evaluate_box_proposals",
    "evaluate_predictions_on_coco",
    "per_class_ap",
    "prepare_for_coco_detection",
]
