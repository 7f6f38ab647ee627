"""PASCAL VOC evaluation: entry point :func:`voc_evaluation`."""
import logging

from .voc_eval import calc_detection_voc_ap, calc_detection_voc_prec_rec, do_voc_evaluation, eval_detection_voc


def voc_evaluation(dataset, predictions, output_folder, box_only=False, **_):
    """Evaluate ``predictions`` (list[BoxList], one per dataset index) on a VOC dataset.

    ``box_only`` is not supported (a warning is logged) and ``iou_types`` and the expected-results
    arguments are ignored, as in the original. Returns {"ap": ndarray [C], "map": float}.
    """
    logger = logging.getLogger(__name__)
    if box_only:
        logger.warning("voc evaluation doesn't support box_only, ignored.")
    logger.info("performing voc evaluation, ignored iou_types.")
    return do_voc_evaluation(dataset=dataset, predictions=predictions, output_folder=output_folder, logger=logger)


__all__ = [
    "calc_detection_voc_ap",
    "calc_detection_voc_prec_rec",
    "do_voc_evaluation",
    "eval_detection_voc",
    "voc_evaluation",
]
