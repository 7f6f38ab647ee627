#!/usr/bin/env python
"""Train FCOS: ``python tools/train_net.py --config-file F [--skip-test] [KEY VALUE ...]``.

Runs in one process, or in several with ``torchrun --nproc_per_node=N tools/train_net.py ...``
or ``python -m torch.distributed.launch --nproc_per_node=N tools/train_net.py ...``
(``--local_rank``, ``--local-rank`` and the LOCAL_RANK variable all work), on several machines
(torchrun's c10d rendezvous) or under Slurm's srun (tools/slurm_train.sh; see docs/distributed.md).
SOLVER.IMS_PER_BATCH is the global batch. Running the same command again resumes from OUTPUT_DIR/last_checkpoint.
After training, DATASETS.TEST is evaluated (unless --skip-test; with SOLVER.TEST_PERIOD > 0 the
evaluation at MAX_ITER already was that test). A test that cannot run exits non-zero with a
message that names the saved model.
The work is done by :mod:`fcos_core.engine.launch` and :mod:`fcos_core.engine.defaults`.
"""
import sys

from fcos_core.engine.defaults import run_test, train
from fcos_core.engine.launch import (
    config_from_args, default_argument_parser, setup_distributed, setup_run, teardown_distributed,
)
from fcos_core.engine.periodic_eval import evaluate_after_training, tested_during_training
from fcos_core.utils.comm import get_rank
from fcos_core.utils.env import seed_all_rng


def parse_args(argv=None):
    return default_argument_parser("FCOS training", skip_test=True).parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    distributed = setup_distributed(args.local_rank)
    cfg = config_from_args(args)
    seed_all_rng(cfg.SEED + get_rank())
    logger = setup_run(cfg)
    model = train(cfg, args.local_rank, distributed, logger)
    if not args.skip_test and not tested_during_training(cfg):
        evaluate_after_training(lambda: run_test(cfg, model, distributed), cfg.OUTPUT_DIR, logger)
    teardown_distributed(distributed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
