"""Fixtures that several test folders share.

Inductor (TEST.COMPILE) compiles in the process that runs it rather than in its pool of compile
workers (TORCHINDUCTOR_COMPILE_THREADS=1); its tests run in a process of their own
(tests/engine/test_compile.py says why).
"""
import os

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # before torch reads its inductor config

import pytest  # noqa: E402
import torch  # noqa: E402


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
