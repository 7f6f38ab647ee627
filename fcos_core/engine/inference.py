"""Running a detector over a test loader, gathering results on rank 0, and evaluating them.

Also the inference-only preparation of a model shared by every inference path (tools/test_net.py,
the end of tools/train_net.py, the COCODemo predictor, tools/benchmark.py): folded batch norms
(TEST.FUSE_FROZEN_BN), autocast (TEST.AMP, TEST.AMP_DTYPE), channels_last, torch.compile
(TEST.COMPILE, fcos_core/engine/compile.py) and Winograd convolutions (TEST.WINOGRAD,
fcos_core/layers/winograd.py).
"""
import copy
import logging
import os
import sys
import time
from typing import NamedTuple, Optional

import torch
from tqdm import tqdm

from fcos_core.data.datasets.evaluation import evaluate
from fcos_core.data.datasets.evaluation.coco.backends import resolve_backend
from fcos_core.engine.compile import compile_for_inference
from fcos_core.layers.winograd import winograd_convs_for_inference
from fcos_core.modeling.fuse import fuse_conv_bn_for_inference
from fcos_core.structures.boxlist_pack import pack_boxlists, unpack_boxlists
from fcos_core.structures.image_list import ImageList, to_image_list
from fcos_core.utils.comm import gather_tensor_dicts, get_world_size, is_main_process, synchronize
from fcos_core.utils.env import amp_dtype_for

from fcos_core.utils.amp import autocast_context


class InferenceOptions(NamedTuple):
    """How a model runs at test time (see :func:`make_inference_options`)."""

    amp_dtype: Optional[torch.dtype] = None  # autocast dtype, None for float32
    channels_last: bool = False  # model weights and images in channels_last
    fuse_bn: bool = False  # fold conv + batch norm pairs (modeling/fuse.py)
    compile: bool = False  # backbone and head through torch.compile (engine/compile.py)
    winograd: bool = False  # 3x3 stride-1 convs by Winograd F(4x4, 3x3) (layers/winograd.py)


def make_inference_options(cfg, device=None):
    """:class:`InferenceOptions` from TEST.AMP, TEST.AMP_DTYPE, TEST.FUSE_FROZEN_BN, TEST.COMPILE,
    TEST.WINOGRAD and SOLVER.CHANNELS_LAST: the one place that reads them.

    ``device`` (default MODEL.DEVICE) is where the model runs. bfloat16 autocast on a CPU also
    turns channels_last on: oneDNN runs bfloat16 convolutions in that layout, and converting at
    every layer would eat the gain. TEST.COMPILE with a TEST.BACKEND other than "pytorch" is a
    ValueError (the ONNX runtimes run their own graph). TEST.WINOGRAD (float32 convolutions on a
    CPU) is a ValueError with another backend, with autocast (TEST.AMP) or on a GPU; it turns
    channels_last on (the kernel's layout).
    """
    if cfg.TEST.COMPILE and cfg.TEST.BACKEND != "pytorch":
        raise ValueError("TEST.COMPILE compiles the PyTorch model; TEST.BACKEND {!r} runs the ONNX export "
                         "instead: set TEST.COMPILE False or TEST.BACKEND 'pytorch'".format(cfg.TEST.BACKEND))
    device = torch.device(device if device is not None else cfg.MODEL.DEVICE)
    amp_dtype = amp_dtype_for(device, cfg.TEST.AMP, cfg.TEST.AMP_DTYPE)
    cpu_bf16 = amp_dtype == torch.bfloat16 and device.type == "cpu"
    winograd = bool(cfg.TEST.WINOGRAD)
    if winograd:
        _check_winograd(cfg, device, amp_dtype)
    return InferenceOptions(amp_dtype, bool(cfg.SOLVER.CHANNELS_LAST) or cpu_bf16 or winograd,
                            bool(cfg.TEST.FUSE_FROZEN_BN), bool(cfg.TEST.COMPILE), winograd)


def _check_winograd(cfg, device, amp_dtype):
    why = None
    if cfg.TEST.BACKEND != "pytorch":
        why = "TEST.BACKEND {!r} runs the ONNX export; set TEST.BACKEND 'pytorch'".format(cfg.TEST.BACKEND)
    elif device.type != "cpu":
        why = "MODEL.DEVICE is {!r} (its kernel is for CPUs); set MODEL.DEVICE cpu".format(str(device))
    elif amp_dtype is not None:
        why = "TEST.AMP runs {} convolutions; set TEST.AMP False".format(amp_dtype)
    if why:
        raise ValueError("TEST.WINOGRAD runs the PyTorch model's float32 convolutions on a CPU, but " + why)


def prepare_for_inference(model, fuse_bn=True, channels_last=False, compile=False, winograd=False):
    """The model to run at test time, in eval mode; ``model`` itself is never changed.

    Args:
        model: a detector (or any module; a DistributedDataParallel wrapper is looked through).
        fuse_bn: fold its conv + batch norm pairs (:func:`fuse_conv_bn_for_inference`), in a copy.
        channels_last: weights in channels_last memory format (in a copy unless already so).
        compile: a detector's backbone and head compiled by inductor with frozen weights
            (:func:`~fcos_core.engine.compile.compile_for_inference`), in a copy; its first call per
            shape family compiles (tens of seconds); a RuntimeError naming TEST.COMPILE when inductor
            cannot (e.g. no C++ compiler).
        winograd: its 3x3 stride-1 convolutions replaced by Winograd F(4x4, 3x3) ones
            (:func:`~fcos_core.layers.winograd.winograd_convs_for_inference`), in a copy; CPU, float32,
            no gradient.

    Returns ``model`` (in eval mode) when there is nothing to do, else a copy only meant for
    inference: its state dict is not a checkpoint's when folded or compiled, so it is never trained
    or saved.
    """
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    source = model
    if fuse_bn:
        model = fuse_conv_bn_for_inference(model)
    if channels_last and not _is_channels_last(model):
        if model is source:
            model = copy.deepcopy(model)
        model.to(memory_format=torch.channels_last)
    if winograd:
        if model is source:
            model = copy.deepcopy(model)
        winograd_convs_for_inference(model)
    if compile:
        model = compile_for_inference(model, in_place=model is not source)
    return model.eval()


def _is_channels_last(model):
    weights = [p for p in model.parameters() if p.dim() == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def forward_for_inference(model, images, device, amp_dtype=None, channels_last=False):
    """``model(images)`` as test time runs it, for a model from :func:`prepare_for_inference`.

    ``images`` (an ImageList, or a list of [C, H, W] tensors, batched here with the model's
    ``size_divisibility``) are moved to ``device``, put in channels_last when ``channels_last``,
    and the forward pass runs under autocast of ``amp_dtype`` (None: float32). Gradients are the
    caller's business (``torch.no_grad`` / ``torch.inference_mode`` around this call).
    """
    with autocast_context(device, amp_dtype):
        if not isinstance(images, ImageList):
            images = to_image_list(images, getattr(model, "size_divisibility", 0))
        images = images.to(device)
        if channels_last:
            images.tensors = images.tensors.contiguous(memory_format=torch.channels_last)
        return model(images)


def compute_on_dataset(model, data_loader, device, amp_dtype=None, channels_last=False, bbox_aug_fn=None,
                       fuse_bn=False, runner=None, compile=False, winograd=False):
    """Predictions of ``model`` for every image of ``data_loader``: ``{dataset index: BoxList}`` on the CPU.

    ``bbox_aug_fn(model, images, device)``, when given, replaces the plain forward pass
    (test-time augmentation, TEST.BBOX_AUG). ``fuse_bn``, ``channels_last``, ``compile`` and ``winograd`` run a copy
    of ``model`` prepared by :func:`prepare_for_inference`; ``model`` is left as it was (but in eval mode).
    ``runner`` (TEST.BACKEND's, :func:`fcos_core.export.runtime.make_backend_runner`), when given,
    replaces ``model``: ``runner(images)`` gives the detections.
    """
    model.eval()
    model = prepare_for_inference(model, fuse_bn, channels_last, compile, winograd) if runner is None else None
    results = {}
    show = is_main_process() and sys.stderr.isatty()
    for images, _targets, image_ids in tqdm(data_loader, desc="inference", disable=not show, dynamic_ncols=True):
        with torch.no_grad():
            if runner is not None:
                output = runner(images)
            elif bbox_aug_fn is not None:
                with autocast_context(device, amp_dtype):
                    output = bbox_aug_fn(model, images, device)
            else:
                output = forward_for_inference(model, images, device, amp_dtype, channels_last)
        for img_id, result in zip(image_ids, output):
            result = result.to("cpu")
            result.bbox = result.bbox.float()
            if result.has_field("scores"):
                result.add_field("scores", result.get_field("scores").float())
            results[img_id] = result
    return results


def _accumulate_predictions_from_multiple_gpus(predictions_per_gpu, logger, num_images=None):
    """Merge the per-process ``{dataset index: BoxList}`` on rank 0 into a list ordered by index.

    In several processes each one packs its BoxLists into a few flat tensors
    (:func:`~fcos_core.structures.boxlist_pack.pack_boxlists`: image indices, sizes, xyxy boxes
    [K, 4] and every field, e.g. scores [K] and labels [K]) that ``dist.gather`` brings to rank 0,
    which rebuilds the BoxLists (xyxy); nothing is pickled but the names, dtypes and shapes.

    Arguments:
        predictions_per_gpu (dict[int, BoxList]): this process's predictions.
        logger: where the gather's size and time go.
        num_images (int or None): the dataset's length; None: the largest index + 1.

    Returns:
        list[BoxList] (rank 0, one per index 0..num_images-1) or None (other ranks).

    Raises:
        RuntimeError (rank 0): indices that no process predicted (named), or indices past
        ``num_images``: evaluating a subset silently would misreport the AP of the dataset.
    """
    start = time.time()
    if get_world_size() == 1:
        predictions = dict(predictions_per_gpu)
    else:
        gathered = gather_tensor_dicts(pack_boxlists(predictions_per_gpu))
        if not is_main_process():
            return None
        predictions = unpack_boxlists(gathered)
        logger.info("Gathered the detections of %d images (%d boxes) from %d processes as tensors in %.2f s",
                    len(predictions), sum(int(g["num_boxes"].sum()) for g in gathered), len(gathered),
                    time.time() - start)
    if num_images is None:
        num_images = max(predictions) + 1 if predictions else 0
    _check_all_images_predicted(predictions, num_images)
    return [predictions[i] for i in range(num_images)]


def _check_all_images_predicted(predictions, num_images):
    """RuntimeError naming the indices of 0..num_images-1 missing from ``predictions`` (and any extra)."""
    missing = [i for i in range(num_images) if i not in predictions]
    extra = sorted(i for i in predictions if not 0 <= i < num_images)
    if missing or extra:
        shown = ", ".join(str(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise RuntimeError("inference: {} of {} images were predicted by no process (dataset indices: {}){}; "
                           "the data loaders did not cover the dataset".format(
                               len(missing), num_images, shown or "none",
                               ", and indices past the dataset: {}".format(extra[:20]) if extra else ""))


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
    fuse_bn=False,
    coco_eval_backend="auto",
    runner=None,
    compile=False,
    winograd=False,
):
    """Predict on every image of ``data_loader.dataset`` and evaluate (the original's signature).

    ``amp_dtype``, ``channels_last``, ``fuse_bn``, ``compile`` and ``winograd``: see :class:`InferenceOptions`.
    ``coco_eval_backend``: TEST.COCO_EVAL_BACKEND, the COCOeval of a COCO-format dataset; checked
    before the images are predicted (an ImportError naming the extra when it is not installed).
    ``runner``: TEST.BACKEND's runner replacing ``model`` (see :func:`compute_on_dataset`).

    Returns the evaluation result on rank 0 (see
    :func:`fcos_core.data.datasets.evaluation.evaluate`) and None on the other ranks.
    """
    logger = logging.getLogger("fcos_core.inference")
    dataset = data_loader.dataset
    if getattr(dataset, "coco", None) is not None:
        coco_eval_backend = resolve_backend(coco_eval_backend)
    logger.info("Start evaluation on %s dataset (%d images).", dataset_name, len(dataset))
    start = time.time()
    if runner is not None:
        logger.info("Running %s", runner)
    predictions = compute_on_dataset(model, data_loader, device, amp_dtype, channels_last, bbox_aug_fn, fuse_bn,
                                     runner, compile, winograd)
    synchronize()
    total = time.time() - start
    num_devices = get_world_size()
    logger.info(
        "Total inference time: %.2f s (%.4f s / img per device, on %d devices)",
        total, total * num_devices / max(len(dataset), 1), num_devices,
    )
    predictions = _accumulate_predictions_from_multiple_gpus(predictions, logger, len(dataset))
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
        coco_eval_backend=coco_eval_backend,
    )
