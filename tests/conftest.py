"""Fixtures that several test folders share."""
import pytest
import torch


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
