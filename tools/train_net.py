#!/usr/bin/env python
"""Train FCOS: ``python tools/train_net.py --config-file F [--skip-test] [KEY VALUE ...]``.

Runs in one process, or in several with ``torchrun --nproc_per_node=N tools/train_net.py ...``
or ``python -m torch.distributed.launch --nproc_per_node=N tools/train_net.py ...``
(``--local_rank``, ``--local-rank`` and the LOCAL_RANK variable all work). SOLVER.IMS_PER_BATCH is
the global batch. Running the same command again resumes from OUTPUT_DIR/last_checkpoint.
"""
import argparse
import inspect
import os
import sys

import torch

from fcos_core.config import cfg, resolve_device
from fcos_core.data import make_data_loader
from fcos_core.data.datasets.coco import data_skip_counts
from fcos_core.engine.bbox_aug import make_bbox_aug_fn
from fcos_core.engine.inference import inference, make_inference_options
from fcos_core.engine.trainer import do_train, plot_loss_curves, set_rng_state
from fcos_core.modeling.detector import build_detection_model
from fcos_core.solver import make_lr_scheduler, make_optimizer
from fcos_core.utils.checkpoint import DetectronCheckpointer
from fcos_core.utils.collect_env import env_rows
from fcos_core.utils.comm import get_rank, get_world_size, synchronize
from fcos_core.utils.env import amp_dtype_for, seed_all_rng
from fcos_core.utils.logger import setup_logger


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="FCOS training")
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a config file")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)))
    parser.add_argument("--skip-test", dest="skip_test", action="store_true", help="do not test the final model")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return parser.parse_args(argv)


def setup_distributed(local_rank):
    """Join the process group when launched with several processes; returns (distributed, device_index)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size < 2:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(backend=backend, init_method="env://")
    synchronize()
    return True


def load_config(args):
    """Merge the file and the overrides; a bad key fails here, before any work starts."""
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE)
    cfg.freeze()
    return cfg


def build_training(cfg, distributed, local_rank, logger):
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
        # BatchNorm statistics stay per process during training (as the original's
        # broadcast_buffers=False); torch >= 2.14 names that forward_sync_buffers (init sync is fine:
        # every process builds the same model).
        ddp_params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in ddp_params
                   else {"broadcast_buffers": False})
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, output_device=local_rank if ids else None, **no_sync
        )
    return model, optimizer, scheduler


def train(cfg, local_rank, distributed, logger):
    model, optimizer, scheduler = build_training(cfg, distributed, local_rank, logger)
    output_dir = cfg.OUTPUT_DIR
    checkpointer = DetectronCheckpointer(cfg, model, optimizer, scheduler, output_dir, get_rank() == 0)
    extra = checkpointer.load(cfg.MODEL.WEIGHT)
    arguments = {"iteration": int(extra.get("iteration", 0))}
    if "rng_state" in extra:
        set_rng_state(extra["rng_state"])
    amp_dtype = amp_dtype_for(cfg.MODEL.DEVICE, cfg.SOLVER.AMP)
    scaler = None
    if amp_dtype == torch.float16:
        scaler = torch.amp.GradScaler("cuda")
        if "scaler" in extra:
            scaler.load_state_dict(extra["scaler"])
    data_loader = make_data_loader(cfg, is_train=True, is_distributed=distributed, start_iter=arguments["iteration"])
    logger.info("Training in %d process(es), %d images each (SOLVER.IMS_PER_BATCH %d), from iteration %d",
                get_world_size(), cfg.SOLVER.IMS_PER_BATCH // get_world_size(), cfg.SOLVER.IMS_PER_BATCH,
                arguments["iteration"])
    metrics_path = os.path.join(output_dir, "metrics.json") if output_dir else None
    if arguments["iteration"] >= cfg.SOLVER.MAX_ITER:
        logger.info("Already trained for %d iterations (SOLVER.MAX_ITER); nothing to do", arguments["iteration"])
        return model
    do_train(
        model, data_loader, optimizer, scheduler, checkpointer, cfg.MODEL.DEVICE, cfg.SOLVER.CHECKPOINT_PERIOD,
        arguments, cfg.SOLVER.MAX_ITER, amp_dtype=amp_dtype, grad_scaler=scaler,
        clip_grad_norm=cfg.SOLVER.CLIP_GRAD_NORM, channels_last=cfg.SOLVER.CHANNELS_LAST,
        log_period=cfg.SOLVER.LOG_PERIOD, metrics_path=metrics_path, logger=logger,
    )
    skips = data_skip_counts(data_loader.dataset)
    if skips:
        logger.warning("Training data skipped: %s", dict(skips))
    if get_rank() == 0 and metrics_path and os.path.exists(metrics_path):
        png = plot_loss_curves(metrics_path, os.path.join(output_dir, "loss_curves.png"))
        logger.info("Loss curves written to %s", png)
    return model


def run_test(cfg, model, distributed, logger):
    """Evaluate ``model`` on every DATASETS.TEST entry; results under OUTPUT_DIR/inference/<name>/."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    iou_types = ("bbox",)
    output_folders = [None] * len(cfg.DATASETS.TEST)
    if cfg.OUTPUT_DIR:
        for i, name in enumerate(cfg.DATASETS.TEST):
            output_folders[i] = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            os.makedirs(output_folders[i], exist_ok=True)
    loaders = make_data_loader(cfg, is_train=False, is_distributed=distributed)
    options = make_inference_options(cfg)._asdict()  # folded BN, AMP, channels_last (TEST.*)
    results = []
    for folder, name, loader in zip(output_folders, cfg.DATASETS.TEST, loaders):
        results.append(inference(
            model, loader, dataset_name=name, iou_types=iou_types, box_only=False, device=cfg.MODEL.DEVICE,
            expected_results=cfg.TEST.EXPECTED_RESULTS,
            expected_results_sigma_tol=cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL, output_folder=folder,
            bbox_aug_fn=make_bbox_aug_fn(cfg), **options,
        ))
        synchronize()
    return results


def main(argv=None):
    args = parse_args(argv)
    distributed = setup_distributed(args.local_rank)
    load_config(args)
    seed_all_rng(cfg.SEED + get_rank())
    if cfg.OUTPUT_DIR and get_rank() == 0:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logger = setup_logger("fcos_core", cfg.OUTPUT_DIR, get_rank())
    logger.info("Command: %s", " ".join(sys.argv))
    logger.info("Environment:\n%s", "\n".join(f"  {k}: {v}" for k, v in env_rows()))
    logger.info("Running with config:\n%s", cfg)
    if cfg.OUTPUT_DIR and get_rank() == 0:
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yml"), "w") as f:
            f.write(cfg.dump())
    model = train(cfg, args.local_rank, distributed, logger)
    if not args.skip_test:
        run_test(cfg, model, distributed, logger)
    if distributed:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
