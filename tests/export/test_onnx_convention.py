"""The ONNX graph's post-processing is the original convention's: a torchvision-convention model is refused
with a message naming MODEL.FCOS.CONVENTION, its raw head outputs still export."""
from pathlib import Path

import pytest
import torch

from fcos_core.config import load_config
from fcos_core.export.onnx import ExportableFCOS
from fcos_core.modeling.detector import build_detection_model

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "torchvision" / "fcos_resnet50_fpn_coco.yaml")


def test_torchvision_convention_is_refused_with_post_processing():
    model = build_detection_model(load_config(CONFIG, ["MODEL.WEIGHT", ""])).eval()
    with pytest.raises(ValueError, match=r"MODEL\.FCOS\.CONVENTION 'original' only.*'torchvision'.*--no-postprocess"):
        ExportableFCOS(model, postprocess=True)
    raw = ExportableFCOS(model, postprocess=False)
    with torch.no_grad():
        outputs = raw(torch.zeros(1, 3, 64, 96))
    assert len(outputs) == 15 and outputs[0].shape == (1, 80, 8, 12)
