"""Access to the compiled ops in ``fcos_core._C`` and the fallback when they are missing.

Every op wrapper in :mod:`fcos_core.layers` asks :func:`has_kernel` whether a compiled
kernel exists for the op and the tensor's device, and otherwise runs its pure-PyTorch
reference after :func:`warn_fallback` has said, once per op, how to build the kernels.
"""
import warnings

import torch

BUILD_COMMAND = "pip install --no-build-isolation -e .   (from the repository root; see INSTALL.md)"
NAMESPACE = "fcos_core"

_load_error = None
try:  # importing the module runs the TORCH_LIBRARY registrations of csrc/
    from fcos_core import _C  # noqa: F401

    _loaded = True
except ImportError as exc:  # pragma: no cover - exercised only without a build
    _loaded = False
    _load_error = exc

_warned = set()


def extension_loaded():
    """True when ``fcos_core._C`` imported."""
    return _loaded


def load_error():
    """The ImportError met while importing ``fcos_core._C``, or None."""
    return _load_error


def has_kernel(op_name, device_type):
    """Whether ``fcos_core::<op_name>`` has a compiled kernel for ``device_type`` ("cpu", "cuda")."""
    if not _loaded:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op_name}", key)


def op(op_name):
    """The compiled op ``torch.ops.fcos_core.<op_name>``."""
    return getattr(getattr(torch.ops, NAMESPACE), op_name)


def warn_fallback(op_name, device_type):
    """Warn once per (op, device) that the pure-PyTorch reference runs instead of a kernel."""
    if (op_name, device_type) in _warned:
        return
    _warned.add((op_name, device_type))
    if not _loaded:
        why = f"fcos_core._C could not be imported ({_load_error})"
    else:
        why = f"fcos_core._C was built without {device_type.upper()} kernels"
    warnings.warn(
        f"{op_name}: {why}; using the slower pure-PyTorch reference. Build the kernels with: {BUILD_COMMAND}",
        RuntimeWarning,
        stacklevel=3,
    )


def backend(op_name, device_type):
    """A short name of what runs ``op_name`` on ``device_type``: 'C++', 'CUDA' or 'PyTorch reference'."""
    if has_kernel(op_name, device_type):
        return "CUDA" if device_type == "cuda" else "C++"
    return "PyTorch reference"
