"""Print what fcos_core runs on: Python, torch, CUDA, compilers, and each op's backend.

Run ``python -m fcos_core.utils.collect_env`` and paste the output into bug reports.
``--check`` also runs every compiled op once on a tiny input and exits non-zero when the
CPU kernels are missing, so an install script can stop on a broken build.
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys

import torch

from fcos_core.layers import _extension

OPS = ("nms", "ml_nms", "sigmoid_focal_loss_forward", "sigmoid_focal_loss_backward")


def _command_version(cmd):
    """First line naming a version from ``cmd --version``, or 'not found'."""
    exe = shutil.which(cmd[0])
    if exe is None:
        return "not found"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"error: {exc}"
    lines = [ln for ln in out.splitlines() if ln.strip()]
    picked = [ln for ln in lines if "release" in ln or "version" in ln.lower()]
    return (picked or lines or ["unknown"])[-1 if cmd[0] == "nvcc" else 0].strip()


def env_rows():
    """A list of (name, value) pairs describing the environment."""
    import torchvision

    rows = [
        ("Python", sys.version.split()[0]),
        ("Platform", platform.platform()),
        ("torch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("torch CUDA version", str(torch.version.cuda)),
        ("CUDA available", str(torch.cuda.is_available())),
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            rows.append((f"GPU {i}", torch.cuda.get_device_name(i)))
    rows += [
        ("CPU capability", torch.backends.cpu.get_cpu_capability()),
        ("torch threads", str(torch.get_num_threads())),
        ("CUDA_HOME", os.environ.get("CUDA_HOME", "unset")),
        ("nvcc", _command_version(["nvcc", "--version"])),
        ("c++", _command_version(["c++", "--version"])),
    ]
    if _extension.extension_loaded():
        from fcos_core import _C

        rows.append(("fcos_core._C", _C.__file__))
    else:
        rows.append(("fcos_core._C", f"NOT LOADED: {_extension.load_error()}"))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in OPS:
        rows.append((f"op {name}", ", ".join(f"{d}: {_extension.backend(name, d)}" for d in devices)))
    return rows


def check_ops(device="cpu"):
    """Run each compiled op once on ``device``; returns a list of problems (empty when fine)."""
    problems = []
    for name in OPS:
        if not _extension.has_kernel(name, device):
            problems.append(f"no compiled {device} kernel for fcos_core::{name}")
    if problems:
        return problems
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    labels = torch.tensor([1, 1, 2], device=device)
    keep = _extension.op("nms")(boxes, scores, 0.5, True).tolist()
    if keep != [0, 2]:
        problems.append(f"nms kept {keep}, expected [0, 2]")
    keep = _extension.op("ml_nms")(boxes, scores, labels, 0.5, True).tolist()
    if keep != [0, 2]:
        problems.append(f"ml_nms kept {keep}, expected [0, 2]")
    logits = torch.zeros(2, 3, device=device)
    targets = torch.tensor([0, 2], device=device)
    loss = _extension.op("sigmoid_focal_loss_forward")(logits, targets, 2.0, 0.25)
    if not torch.isfinite(loss):
        problems.append(f"sigmoid_focal_loss_forward gave {loss}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="run each compiled op once; exit 1 if any is missing")
    args = parser.parse_args(argv)
    rows = env_rows()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.check:
        problems = check_ops("cpu")
        if torch.cuda.is_available():
            problems += check_ops("cuda")
        if problems:
            print("\nFAILED: " + "; ".join(problems), file=sys.stderr)
            print(f"Rebuild the ops with: {_extension.BUILD_COMMAND}", file=sys.stderr)
            return 1
        print("\nall compiled ops ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
