"""What every entry point does first: its common arguments, the process group, the config.

The scripts in ``tools/`` and ``demo/`` parse their arguments with :func:`default_argument_parser`,
join the process group with :func:`setup_distributed`, and read their config with
:func:`config_from_args`, which returns a frozen copy (the global ``fcos_core.config.cfg`` is never
changed). :func:`setup_run` then starts the logger and records the command, environment and config.
"""
import argparse
import os
import sys
import warnings

import torch

from fcos_core.config import load_config, resolve_device
from fcos_core.engine.slurm import export_slurm_placement, launcher_local_rank
from fcos_core.utils.collect_env import env_rows
from fcos_core.utils.comm import get_rank, get_world_size, synchronize
from fcos_core.utils.logger import setup_logger


def default_argument_parser(description, skip_test=False):
    """``--config-file F``, the launcher's local rank (``--local_rank``, ``--local-rank``, the
    LOCAL_RANK variable as ``torch.distributed.launch`` and ``torchrun`` give it, or SLURM_LOCALID
    under ``srun``: see :mod:`fcos_core.engine.slurm`) and trailing ``KEY VALUE`` overrides; with
    ``skip_test``, ``--skip-test`` too (tools/train_net.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a config file")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=launcher_local_rank())
    if skip_test:
        parser.add_argument("--skip-test", dest="skip_test", action="store_true", help="do not test the final model")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return parser


def setup_distributed(local_rank):
    """Join the process group when the launcher started several processes (WORLD_SIZE > 1, or
    SLURM_NTASKS > 1 in an ``srun`` step, whose variables become torch's first: see
    :func:`fcos_core.engine.slurm.export_slurm_placement`): NCCL with one GPU per process
    (``local_rank``, the index on this machine) where CUDA is there, else Gloo. The group's rank,
    not the local rank, decides which share of the data a process reads.

    Returns:
        bool: True when this process is one of several (the group is joined), else False.
    """
    if export_slurm_placement().world_size < 2:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    store = restarted_group_store()
    if store is None:
        torch.distributed.init_process_group(backend=backend, init_method="env://")
    else:
        torch.distributed.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]),
                                             world_size=int(os.environ["WORLD_SIZE"]))
    synchronize()
    return True


def restarted_group_store(environ=None):
    """The store for the process group of a group that torchrun restarted (``--max-restarts``), or
    None where ``init_method="env://"`` is right (a first attempt, Slurm, torch.distributed.launch).

    torchrun (torch >= 2.4, c10d rendezvous) keeps one TCPStore for all attempts
    (TORCHELASTIC_USE_AGENT_STORE=True) and its keys are not cleared between them, so a restarted
    group would read the dead processes' addresses (Gloo: "Connection refused"; NCCL: a stale
    unique id; pytorch/pytorch#135712). On one machine every worker has the same
    TORCHELASTIC_RESTART_COUNT, and the group gets the keys under "fcos_restart_<count>/" of that
    store. Across machines the counts differ (a machine restarted for another's failure does not
    count it): a warning says to start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, which
    gives every attempt a store of its own.
    """
    env = os.environ if environ is None else environ
    restart = int(env.get("TORCHELASTIC_RESTART_COUNT") or 0)
    if restart == 0 or env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if env.get("LOCAL_WORLD_SIZE") != env.get("WORLD_SIZE"):
        warnings.warn(f"torchrun restarted the group (TORCHELASTIC_RESTART_COUNT {restart}) on several machines with "
                      "one TCPStore for all attempts, whose stale keys can break the new group "
                      "(pytorch/pytorch#135712): start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1")
        return None
    from torch.distributed.constants import default_pg_timeout

    store = torch.distributed.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False,
                                       timeout=default_pg_timeout)
    return torch.distributed.PrefixStore(f"fcos_restart_{restart}", store)


def config_from_args(args):
    """The run's config: the defaults, ``args.config_file`` and ``args.opts`` merged in, MODEL.DEVICE
    resolved ("cuda" without a GPU is an error naming the key), frozen. A bad key or value fails
    here, before any work starts. The global ``cfg`` is left untouched."""
    config = load_config(args.config_file or None, args.opts or [], freeze=False)
    config.MODEL.DEVICE = resolve_device(config.MODEL.DEVICE)
    config.freeze()
    return config


def setup_run(cfg, log_filename="log.txt", save_config=True):
    """Create OUTPUT_DIR (rank 0), start the "fcos_core" logger (console on rank 0, and
    OUTPUT_DIR/``log_filename``), log the command line, the environment and the config, and with
    ``save_config`` write the config to OUTPUT_DIR/config.yml so that the run can be repeated.

    Returns:
        logging.Logger
    """
    if cfg.OUTPUT_DIR and get_rank() == 0:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logger = setup_logger("fcos_core", cfg.OUTPUT_DIR, get_rank(), filename=log_filename)
    logger.info("Command: %s", " ".join(sys.argv))
    if get_world_size() > 1:
        logger.info("Process group: %d processes over %s, rank %d, local rank %s, rendezvous at %s:%s",
                    get_world_size(), torch.distributed.get_backend(), get_rank(), os.environ.get("LOCAL_RANK"),
                    os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT"))
    logger.info("Environment:\n%s", "\n".join(f"  {k}: {v}" for k, v in env_rows()))
    logger.info("Running with config:\n%s", cfg)
    if save_config and cfg.OUTPUT_DIR and get_rank() == 0:
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yml"), "w") as f:
            f.write(cfg.dump())
    return logger


def teardown_distributed(distributed):
    """Leave the process group that :func:`setup_distributed` joined (when it did)."""
    if distributed:
        torch.distributed.destroy_process_group()
