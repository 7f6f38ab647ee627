"""Running a detector over a test loader, gathering results on rank 0, and evaluating them."""
import logging
import os
import sys
import time

import torch
from tqdm import tqdm

from fcos_core.data.datasets.evaluation import evaluate
from fcos_core.utils.comm import all_gather, get_world_size, is_main_process, synchronize

from .trainer import autocast_context


def compute_on_dataset(model, data_loader, device, amp_dtype=None, channels_last=False, bbox_aug_fn=None):
    """Predictions of ``model`` for every image of ``data_loader``: ``{dataset index: BoxList}`` on the CPU.

    ``bbox_aug_fn(model, images, device)``, when given, replaces the plain forward pass
    (test-time augmentation, TEST.BBOX_AUG).
    """
    model.eval()
    results = {}
    show = is_main_process() and sys.stderr.isatty()
    for images, _targets, image_ids in tqdm(data_loader, desc="inference", disable=not show, dynamic_ncols=True):
        with torch.no_grad(), autocast_context(device, amp_dtype):
            if bbox_aug_fn is not None:
                output = bbox_aug_fn(model, images, device)
            else:
                images = images.to(device)
                if channels_last:
                    images.tensors = images.tensors.contiguous(memory_format=torch.channels_last)
                output = model(images)
        for img_id, result in zip(image_ids, output):
            result = result.to("cpu")
            result.bbox = result.bbox.float()
            if result.has_field("scores"):
                result.add_field("scores", result.get_field("scores").float())
            results[img_id] = result
    return results


def _accumulate_predictions_from_multiple_gpus(predictions_per_gpu, logger):
    """Merge the per-process dicts on rank 0 into a list ordered by dataset index."""
    all_predictions = all_gather(predictions_per_gpu)
    if not is_main_process():
        return None
    predictions = {}
    for p in all_predictions:
        predictions.update(p)
    image_ids = sorted(predictions.keys())
    if image_ids != list(range(len(image_ids))):
        logger.warning("Some images were not evaluated: got %d indices up to %d", len(image_ids), image_ids[-1])
    return [predictions[i] for i in image_ids]


def inference(
    model,
    data_loader,
    dataset_name,
    iou_types=("bbox",),
    box_only=False,
    device="cuda",
    expected_results=(),
    expected_results_sigma_tol=4,
    output_folder=None,
    amp_dtype=None,
    channels_last=False,
    bbox_aug_fn=None,
):
    """Predict on every image of ``data_loader.dataset`` and evaluate (the original's signature).

    Returns the evaluation result on rank 0 (see
    :func:`fcos_core.data.datasets.evaluation.evaluate`) and None on the other ranks.
    """
    logger = logging.getLogger("fcos_core.inference")
    dataset = data_loader.dataset
    logger.info("Start evaluation on %s dataset (%d images).", dataset_name, len(dataset))
    start = time.time()
    predictions = compute_on_dataset(model, data_loader, device, amp_dtype, channels_last, bbox_aug_fn)
    synchronize()
    total = time.time() - start
    num_devices = get_world_size()
    logger.info(
        "Total inference time: %.2f s (%.4f s / img per device, on %d devices)",
        total, total * num_devices / max(len(dataset), 1), num_devices,
    )
    predictions = _accumulate_predictions_from_multiple_gpus(predictions, logger)
    if not is_main_process():
        return None
    if output_folder:
        os.makedirs(output_folder, exist_ok=True)
    return evaluate(
        dataset=dataset,
        predictions=predictions,
        output_folder=output_folder,
        box_only=box_only,
        iou_types=iou_types,
        expected_results=expected_results,
        expected_results_sigma_tol=expected_results_sigma_tol,
    )
