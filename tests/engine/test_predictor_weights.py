"""The demo (fcos_core.engine.predictor.build_coco_demo) warns that the detector is untrained for every
MODEL.WEIGHT that holds ImageNet weights only: Detectron's ``catalog://ImageNetPretrained/...`` and
torchvision's ``torchvision://<model>`` names and files, and no weight at all; not for detectors."""
from pathlib import Path

import pytest

import fcos_core.engine.predictor as predictor
from fcos_core.engine.predictor import build_coco_demo, is_untrained_weight
from fcos_core.utils.imagenet_zoo import TORCHVISION_IMAGENET

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "fcos_shapes.yaml")

UNTRAINED = ["", "catalog://ImageNetPretrained/MSRA/R-50", "torchvision://resnet50", "torchvision://MobileNet_V2",
             "/weights/resnet101-63fe2227.pth", TORCHVISION_IMAGENET["resnext101_32x8d"].url]
DETECTORS = ["fcos_resnet50_fpn_coco", "output/model_final.pth", "/weights/fcos_resnet50_fpn_coco-99b0c9b7.pth",
             "https://example.org/resnet50_detector.pth"]


@pytest.mark.parametrize("weight", UNTRAINED)
def test_imagenet_weights_are_untrained_detectors(weight):
    assert is_untrained_weight(weight)


@pytest.mark.parametrize("weight", DETECTORS)
def test_detector_weights_are_not(weight):
    assert not is_untrained_weight(weight)


class _Recorder:
    """Stands for COCODemo: records the config instead of building and loading the model."""

    def __init__(self, cfg, **kwargs):
        self.cfg = cfg


@pytest.mark.parametrize("weight,warned", [("torchvision://resnet50", True), ("torchvision://mobilenet_v2", True),
                                           ("catalog://ImageNetPretrained/MSRA/R-50", True),
                                           ("output/model_final.pth", False)])
def test_build_coco_demo_warns_for_imagenet_weights(monkeypatch, capsys, weight, warned):
    monkeypatch.setattr(predictor, "COCODemo", _Recorder)
    demo = build_coco_demo(CONFIG, weights=weight)
    assert demo.cfg.MODEL.WEIGHT == weight
    err = capsys.readouterr().err
    expected = "warning: MODEL.WEIGHT is {!r}: the detector is untrained".format(weight)
    assert (expected in err) == warned, err
