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


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_dtype_for(device, enabled, dtype=""):
    """The autocast dtype for SOLVER.AMP / TEST.AMP on ``device``, or None for float32.

    Args:
        device: where the model runs ("cpu", "cuda", "cuda:1", ...).
        enabled: SOLVER.AMP / TEST.AMP; False gives None whatever ``dtype`` says.
        dtype: "" (the device's choice) or "float16" / "bfloat16" (TEST.AMP_DTYPE).

    The device's choice: CUDA float16 (with a GradScaler in training); CPU bfloat16 where the CPU
    has native bfloat16 arithmetic, and on other CPUs a warning and float32. An explicit
    "bfloat16" on such a CPU is honoured, with a warning that it is emulated (slower, not faster).
    """
    if not enabled:
        return None
    is_cuda = torch.device(device).type == "cuda"
    log = logging.getLogger(__name__)
    if dtype:
        if dtype not in AMP_DTYPES:
            raise ValueError("AMP dtype {!r} is not one of {}".format(dtype, sorted(AMP_DTYPES)))
        if not is_cuda and AMP_DTYPES[dtype] == torch.bfloat16 and not cpu_has_fast_bf16():
            log.warning("bfloat16 autocast asked for on a CPU without AVX-512 BF16 or AMX: it is emulated "
                        "and slower than float32, and results differ slightly")
        return AMP_DTYPES[dtype]
    if is_cuda:
        return torch.float16
    if cpu_has_fast_bf16():
        return torch.bfloat16
    log.warning(
        "AMP asked for on a CPU without AVX-512 BF16 or AMX: bfloat16 would be emulated and slower, "
        "so running in float32 (TEST.AMP_DTYPE bfloat16 forces it)"
    )
    return None


def seed_all_rng(seed):
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
