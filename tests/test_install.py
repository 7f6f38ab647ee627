"""The installed package: compiled ops present, collect_env reports them, CUDA build registers kernels."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fcos_core.layers import _extension
from fcos_core.utils import collect_env

OPS = collect_env.OPS


def test_extension_loaded_with_cpu_kernels():
    assert _extension.extension_loaded(), _extension.load_error()
    for name in OPS:
        assert _extension.has_kernel(name, "cpu"), f"no CPU kernel for fcos_core::{name}"
        assert _extension.backend(name, "cpu") == "C++"


def test_unknown_device_has_no_kernel():
    assert not _extension.has_kernel("nms", "mps")
    assert _extension.backend("nms", "mps") == "PyTorch reference"


def test_collect_env_check_runs_every_op(capsys):
    assert collect_env.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and torch.__version__ in out
    for name in OPS:
        assert f"op {name}" in out
    assert "all compiled ops ran" in out


def test_check_ops_reports_missing_kernels(monkeypatch):
    monkeypatch.setattr(_extension, "has_kernel", lambda name, dev: name != "ml_nms")
    problems = collect_env.check_ops("cpu")
    assert problems == ["no compiled cpu kernel for fcos_core::ml_nms"]


CUDA_BUILD = os.environ.get("FCOS_CUDA_BUILD_DIR")


@pytest.mark.skipif(not CUDA_BUILD, reason="set FCOS_CUDA_BUILD_DIR to a FORCE_CUDA=1 build (.ci/run does)")
def test_cuda_build_registers_cpu_and_cuda_kernels():
    """The FORCE_CUDA build loads on a machine without a GPU and registers both kernels of every op.

    Its CPU twin is test_extension_loaded_with_cpu_kernels. Runs in a fresh interpreter so that
    the CPU-only build already loaded here does not register the same schemas first.
    """
    import glob

    (so_path,) = glob.glob(os.path.join(CUDA_BUILD, "fcos_core", "_C*.so"))
    code = textwrap.dedent(
        f"""
        import torch
        torch.ops.load_library({so_path!r})
        for name in {OPS!r}:
            for key in ("CPU", "CUDA"):
                assert torch._C._dispatch_has_kernel_for_dispatch_key("fcos_core::" + name, key), (name, key)
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
