"""Facts about the machine that choose fast paths: reduced precision, seeds."""
import logging
import os
import random

import numpy as np
import torch


def cpu_has_fast_bf16():
    """True when the CPU computes bfloat16 matrix products natively (AVX-512 BF16 or AMX).

    Elsewhere bfloat16 autocast is emulated and slower than float32, so it is not worth it.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def amp_dtype_for(device, enabled):
    """The autocast dtype for SOLVER.AMP / TEST.AMP on ``device``, or None for float32.

    CUDA: float16 (with a GradScaler in training). CPU: bfloat16 where the CPU has native
    bfloat16 arithmetic; on other CPUs a warning and float32.
    """
    if not enabled:
        return None
    if torch.device(device).type == "cuda":
        return torch.float16
    if cpu_has_fast_bf16():
        return torch.bfloat16
    logging.getLogger(__name__).warning(
        "AMP asked for on a CPU without AVX-512 BF16 or AMX: bfloat16 would be emulated and slower, "
        "so running in float32"
    )
    return None


def seed_all_rng(seed):
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
