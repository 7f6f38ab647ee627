#!/usr/bin/env python
"""Evaluate a trained FCOS: ``python tools/test_net.py --config-file F [KEY VALUE ...]``.

Loads MODEL.WEIGHT, or the latest checkpoint in OUTPUT_DIR, runs every DATASETS.TEST entry and
writes the results under OUTPUT_DIR/inference/<dataset>/. Several processes (torchrun) split the
images; rank 0 gathers and evaluates.
"""
import argparse
import os
import sys

import torch

from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils.checkpoint import DetectronCheckpointer
from fcos_core.utils.comm import get_rank
from fcos_core.utils.logger import setup_logger

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_net import load_config, run_test, setup_distributed  # noqa: E402

from fcos_core.config import cfg  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="FCOS inference and evaluation")
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a config file")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)))
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return parser.parse_args(argv)


def load_model_for_test(cfg):
    """The model that ``main`` evaluates: built from ``cfg`` on MODEL.DEVICE (channels_last with
    SOLVER.CHANNELS_LAST), with MODEL.WEIGHT loaded, or else the latest checkpoint of OUTPUT_DIR.
    (tools/benchmark.py ``--only accuracy`` uses it too.)"""
    model = build_detection_model(cfg).to(cfg.MODEL.DEVICE)
    if cfg.SOLVER.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    checkpointer = DetectronCheckpointer(cfg, model, save_dir=cfg.OUTPUT_DIR)
    # An explicit MODEL.WEIGHT wins; otherwise the latest checkpoint of OUTPUT_DIR.
    weight = cfg.MODEL.WEIGHT
    checkpointer.load(weight or None, use_latest=not weight)
    return model


def main(argv=None):
    args = parse_args(argv)
    distributed = setup_distributed(args.local_rank)
    load_config(args)
    logger = setup_logger("fcos_core", cfg.OUTPUT_DIR, get_rank(), filename="test_log.txt")
    logger.info("Running with config:\n%s", cfg)
    model = load_model_for_test(cfg)
    results = run_test(cfg, model, distributed, logger)
    if distributed:
        torch.distributed.destroy_process_group()
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
