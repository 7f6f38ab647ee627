#!/usr/bin/env python
"""Evaluate a trained FCOS: ``python tools/test_net.py --config-file F [KEY VALUE ...]``.

Loads MODEL.WEIGHT, or the latest checkpoint in OUTPUT_DIR, runs every DATASETS.TEST entry and
writes the results under OUTPUT_DIR/inference/<dataset>/. Several processes (torchrun) split the
images; rank 0 gathers and evaluates. The work is done by :mod:`fcos_core.engine.defaults`.
"""
import sys

from fcos_core.engine.defaults import load_model_for_test, make_test_runner, run_test
from fcos_core.engine.launch import (
    config_from_args, default_argument_parser, setup_distributed, setup_run, teardown_distributed,
)


def parse_args(argv=None):
    return default_argument_parser("FCOS inference and evaluation").parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    distributed = setup_distributed(args.local_rank)
    cfg = config_from_args(args)
    setup_run(cfg, log_filename="test_log.txt", save_config=False)
    results = run_test(cfg, load_model_for_test(cfg), distributed, runner=make_test_runner(cfg))
    teardown_distributed(distributed)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
