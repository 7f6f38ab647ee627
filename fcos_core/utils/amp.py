"""Autocast for training and every inference path. Which dtype SOLVER.AMP / TEST.AMP mean on a
device is :func:`fcos_core.utils.env.amp_dtype_for`, beside the CPU feature checks it needs."""
from contextlib import nullcontext

import torch


def autocast_context(device, dtype):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
