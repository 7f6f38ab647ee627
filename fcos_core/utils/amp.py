"""Mixed precision helpers shared by training and every inference path.

:func:`amp_dtype_for` (SOLVER.AMP / TEST.AMP to a dtype) lives in :mod:`fcos_core.utils.env`, beside
the CPU feature checks it needs; it is re-exported here so that callers find both in one place.
"""
from contextlib import nullcontext

import torch

from fcos_core.utils.env import amp_dtype_for

__all__ = ["amp_dtype_for", "autocast_context"]


def autocast_context(device, dtype):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
