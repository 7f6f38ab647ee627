"""Fixtures that several test folders share.

Inductor (TEST.COMPILE, tests/engine/test_compile.py) compiles in the process that runs it rather
than in its pool of compile workers (TORCHINDUCTOR_COMPILE_THREADS=1, set before torch reads its
config): no worker processes beside the suite's on two cores.
"""
import os

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.utils.data._utils.signal_handling as _signal_handling  # noqa: E402

# torch's Python-level SIGCHLD handler, which the first DataLoader with workers installs for good
# (it checks the workers whenever any child exits), is never installed in the test process: with
# it installed, the suite's process died of a segmentation fault in the interpreter while waiting
# on a child process, late in the run (tests/export/test_quantize.py, then, with the handler reset
# between tests, tests/tools/test_benchmark.py within one test; session 8, after AMX bf16 work of
# torch and OpenVINO had run in the process). DataLoader workers still work without it; a worker
# that dies is then noticed by the loader's timeout / status checks instead of the signal.
_signal_handling._set_SIGCHLD_handler = lambda: None


@pytest.fixture(scope="session")
def tv_state():
    """torchvision's COCO FCOS (91 logits, random weights), as its state_dict() is published."""
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(0)
    return fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()


@pytest.fixture(scope="session")
def tv_file(tv_state, tmp_path_factory):
    """``tv_state`` saved as a bare state dict (not under a published file name: those are hash-checked)."""
    path = tmp_path_factory.mktemp("tv") / "tv_fcos_resnet50_fpn.pth"
    torch.save(tv_state, path)
    return path
