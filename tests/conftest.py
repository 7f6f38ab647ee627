"""Fixtures that several test folders share.

Inductor (TEST.COMPILE) compiles in the process that runs it rather than in its pool of compile
workers (TORCHINDUCTOR_COMPILE_THREADS=1, set before torch reads its config); its tests run in a
process of their own (tests/engine/test_compile.py).
"""
import os

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import signal  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


# torch's SIGCHLD handler is never installed in the test process (see _default_sigchld): the second
# fresh-clone CI of session 8 still died the same way in tests/tools/test_benchmark.py, within a test
import torch.utils.data._utils.signal_handling as _signal_handling  # noqa: E402

_signal_handling._set_SIGCHLD_handler = lambda: None


@pytest.fixture(autouse=True)
def _default_sigchld():
    """SIGCHLD back to its default after each test. A DataLoader with workers installs torch's
    Python-level SIGCHLD handler for good (it checks the workers whenever any child exits); with it
    installed, the suite's process died of a segmentation fault in the interpreter while it waited
    on tools/quantize_onnx.py's subprocess (tests/export/test_quantize.py), after the benchmark and
    export tests (AMX bf16 work of torch and OpenVINO among them) had run in it (session 8)."""
    yield
    if signal.getsignal(signal.SIGCHLD) not in (signal.SIG_DFL, None):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        import torch.utils.data._utils.signal_handling as handling

        handling._SIGCHLD_handler_set = False  # the next DataLoader with workers installs it again


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
