"""A config turned into a run: the training (model, optimizer, schedule, DDP), the training itself,
the test on DATASETS.TEST, and the model that a test loads. ``tools/train_net.py`` and
``tools/test_net.py`` are argument parsing around these (as detectron2's ``engine/defaults.py``
under its ``tools/train_net.py``); ``tools/benchmark.py`` evaluates with the same functions.
"""
import inspect
import logging
import os

import torch

from fcos_core.config.paths_catalog import results_folder_name
from fcos_core.data import make_data_loader
from fcos_core.data.datasets.coco import data_skip_counts
from fcos_core.data.datasets.evaluation.coco.backends import resolve_backend
from fcos_core.engine.bbox_aug import make_bbox_aug_fn
from fcos_core.engine.classes import (
    check_num_classes, check_test_classes, resolve_num_classes_for_inference, resolve_training_classes,
)
from fcos_core.engine.inference import inference, make_inference_options
from fcos_core.engine.periodic_eval import make_periodic_evaluator
from fcos_core.engine.resume import restore_resume_state
from fcos_core.engine.trainer import do_train, make_train_options
from fcos_core.modeling.detector import build_detection_model
from fcos_core.solver import make_lr_scheduler, make_optimizer
from fcos_core.utils.checkpoint import DetectronCheckpointer
from fcos_core.utils.comm import broadcast_buffers, get_rank, get_world_size, synchronize
from fcos_core.utils.events import make_event_writer
from fcos_core.utils.loss_curves import plot_loss_curves


def build_training(cfg, distributed, local_rank):
    """(model, optimizer, scheduler) for ``cfg``: the model on MODEL.DEVICE (channels_last with
    SOLVER.CHANNELS_LAST, SyncBatchNorm with MODEL.USE_SYNCBN in several processes), wrapped in
    DistributedDataParallel when ``distributed`` (one GPU per process: ``local_rank``)."""
    model = build_detection_model(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    if cfg.MODEL.USE_SYNCBN and distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.SOLVER.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    if distributed:
        ids = [local_rank] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, output_device=local_rank if ids else None, **_per_process_buffers()
        )
    return model, optimizer, scheduler


def _per_process_buffers():
    """DDP's keyword that keeps BatchNorm statistics per process during training (as the original's
    broadcast_buffers=False); torch >= 2.14 names it forward_sync_buffers. The sync at construction
    is fine: every process builds the same model."""
    ddp_params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    if "forward_sync_buffers" in ddp_params:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def train(cfg, local_rank, distributed, logger=None):
    """Train as ``cfg`` says, resuming from OUTPUT_DIR/last_checkpoint when there is one (else from
    MODEL.WEIGHT); writes checkpoints, metrics.json and loss_curves.png under OUTPUT_DIR, and with
    SOLVER.TEST_PERIOD evaluates during training and keeps model_best.pth (engine/periodic_eval.py);
    TensorBoard files under OUTPUT_DIR/tensorboard when the package is installed.

    Raises:
        EvaluationError: the evaluation at MAX_ITER (SOLVER.TEST_PERIOD) failed; model_final is saved.

    Returns:
        the trained model (DDP-wrapped when ``distributed``).
    """
    logger = logger or logging.getLogger("fcos_core.trainer")
    cfg = resolve_training_classes(cfg, logger)  # MODEL.FCOS.NUM_CLASSES 0: DATASETS.TRAIN's count
    resolve_backend(cfg.TEST.COCO_EVAL_BACKEND)  # a bad or missing evaluator fails now, not at the first test
    make_inference_options(cfg)  # so do TEST.* keys that conflict (e.g. TEST.WINOGRAD on a GPU)
    model, optimizer, scheduler = build_training(cfg, distributed, local_rank)
    output_dir = cfg.OUTPUT_DIR
    checkpointer = DetectronCheckpointer(cfg, model, optimizer, scheduler, output_dir, get_rank() == 0)
    metrics_path = os.path.join(output_dir, "metrics.json") if output_dir else None
    options = make_train_options(cfg, metrics_path)
    scaler = torch.amp.GradScaler("cuda") if options.amp_dtype == torch.float16 else None
    # resume from OUTPUT_DIR/last_checkpoint (everything), else MODEL.WEIGHT's weights only (fine-tuning)
    arguments = restore_resume_state(checkpointer.resume_or_load(cfg.MODEL.WEIGHT), scaler)
    data_loader = make_data_loader(cfg, is_train=True, is_distributed=distributed, start_iter=arguments["iteration"])
    # too few classes for the data is an error; the names go into every checkpoint ("categories")
    class_names = getattr(data_loader.dataset, "class_names", None)
    checkpointer.categories = check_num_classes(cfg.MODEL.FCOS.NUM_CLASSES, class_names, cfg.DATASETS.TRAIN, logger)
    logger.info("Training in %d process(es), %d images each (SOLVER.IMS_PER_BATCH %d), from iteration %d",
                get_world_size(), cfg.SOLVER.IMS_PER_BATCH // get_world_size(), cfg.SOLVER.IMS_PER_BATCH,
                arguments["iteration"])
    if arguments["iteration"] >= cfg.SOLVER.MAX_ITER:
        logger.info("Already trained for %d iterations (SOLVER.MAX_ITER); nothing to do", arguments["iteration"])
        return model
    events = make_event_writer(output_dir, get_rank() == 0, arguments["iteration"], logger)
    eval_cfg = periodic_eval_config(cfg, logger)
    evaluator = make_periodic_evaluator(cfg, lambda: run_test(eval_cfg, model, distributed), checkpointer, arguments,
                                        scaler, events, logger)
    do_train(model, data_loader, optimizer, scheduler, checkpointer, arguments, options, grad_scaler=scaler,
             logger=logger, eval_fn=evaluator, events=events)
    events.close()
    skips = data_skip_counts(data_loader.dataset)
    if skips:
        logger.warning("Training data skipped: %s", dict(skips))
    if get_rank() == 0 and metrics_path and os.path.exists(metrics_path):
        png = plot_loss_curves(metrics_path, os.path.join(output_dir, "loss_curves.png"))
        logger.info("Loss curves written to %s", png)
    if evaluator is not None:
        evaluator.finish()
    return model


def periodic_eval_config(cfg, logger=None):
    """The config of the evaluations during training (SOLVER.TEST_PERIOD): ``cfg`` itself, or a frozen
    copy with TEST.COMPILE False when it is on (with a log line). Each evaluation prepares a new
    inference copy of the model being trained, so compiling would cost tens of seconds every time and
    run into dynamo's recompile limit after a few evaluations; the final evaluation of
    tools/train_net.py and tools/test_net.py still compile."""
    if not cfg.TEST.COMPILE:
        return cfg
    (logger or logging.getLogger("fcos_core.trainer")).info(
        "TEST.COMPILE: evaluations during training run eagerly (each would compile a new copy); "
        "the evaluation after training compiles")
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.TEST.COMPILE = False
    eval_cfg.freeze()
    return eval_cfg


def run_test(cfg, model, distributed, runner=None):
    """Evaluate ``model`` on every DATASETS.TEST entry, as TEST.* says (folded norms, AMP,
    channels_last, test-time augmentation); results under OUTPUT_DIR/inference/<name>/.
    ``runner`` (:func:`make_test_runner`: TEST.BACKEND's ONNX runtime), when given, replaces ``model``.

    Returns:
        list: one evaluation result per dataset (rank 0; the others get None entries).

    A dataset whose evaluation raises does not stop the others; the first error is raised at the end
    (in the processes where it happened: all processes pass the same barriers either way).
    """
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if distributed:
        broadcast_buffers(model)  # evaluate the model that the checkpoints hold (rank 0's statistics)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    output_folders = [None] * len(cfg.DATASETS.TEST)
    if cfg.OUTPUT_DIR:
        for i, name in enumerate(cfg.DATASETS.TEST):
            output_folders[i] = os.path.join(cfg.OUTPUT_DIR, "inference", results_folder_name(name))
            os.makedirs(output_folders[i], exist_ok=True)
    loaders = make_data_loader(cfg, is_train=False, is_distributed=distributed)
    options = make_inference_options(cfg)._asdict()
    results, errors = [], []
    for folder, name, loader in zip(output_folders, cfg.DATASETS.TEST, loaders):
        try:
            results.append(inference(
                model, loader, dataset_name=name, iou_types=("bbox",), box_only=False, device=cfg.MODEL.DEVICE,
                expected_results=cfg.TEST.EXPECTED_RESULTS,
                expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL, output_folder=folder,
                bbox_aug_fn=make_bbox_aug_fn(cfg), coco_eval_backend=cfg.TEST.COCO_EVAL_BACKEND, runner=runner,
                **options,
            ))
        except Exception as exc:  # e.g. pycocotools on a broken json (rank 0 only): keep the barriers in step
            logging.getLogger("fcos_core.inference").error("Evaluation of %s failed: %s: %s", name,
                                                           type(exc).__name__, exc)
            results.append(None)
            errors.append(exc)
        synchronize()
    if errors:
        raise errors[0]
    return results


def load_model_for_test(cfg):
    """The model that tools/test_net.py evaluates: built from ``cfg`` on MODEL.DEVICE (channels_last
    with SOLVER.CHANNELS_LAST), with MODEL.WEIGHT loaded when it is set, else the latest checkpoint
    of OUTPUT_DIR. MODEL.FCOS.NUM_CLASSES 0 takes the checkpoint's count; a warning when the
    checkpoint's class names are not those of a DATASETS.TEST set."""
    checkpointer = DetectronCheckpointer(cfg, None, save_dir=cfg.OUTPUT_DIR)
    weight = cfg.MODEL.WEIGHT
    cfg = resolve_num_classes_for_inference(cfg, weight or checkpointer.get_checkpoint_file())
    model = build_detection_model(cfg).to(cfg.MODEL.DEVICE)
    if cfg.SOLVER.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    checkpointer.model = model
    extra = checkpointer.load(weight or None, use_latest=not weight)
    check_test_classes(cfg, extra.get("categories"))
    return model


def make_test_runner(cfg):
    """TEST.BACKEND's runner for tools/test_net.py (None for "pytorch"): the ONNX export of
    MODEL.WEIGHT, else of the latest checkpoint of OUTPUT_DIR (:mod:`fcos_core.export.runtime`).

    In several processes rank 0 makes its runner first (exporting on a cache miss) and the others
    wait at a barrier, then load the cached export instead of exporting it once each."""
    if cfg.TEST.BACKEND == "pytorch":
        return None
    make_inference_options(cfg)  # TEST.COMPILE with this backend: its ValueError before the export
    from fcos_core.export.runtime import make_backend_runner

    weight = cfg.MODEL.WEIGHT or DetectronCheckpointer(cfg, None, save_dir=cfg.OUTPUT_DIR).get_checkpoint_file()
    cfg = resolve_num_classes_for_inference(cfg, weight)
    if get_world_size() == 1:
        return make_backend_runner(cfg, weight)
    if get_rank() != 0:
        synchronize()  # rank 0 has exported (or failed, and then fails here too on its own)
        return make_backend_runner(cfg, weight)
    try:
        return make_backend_runner(cfg, weight)
    finally:
        synchronize()  # also after an error, so that the other ranks are not left waiting
