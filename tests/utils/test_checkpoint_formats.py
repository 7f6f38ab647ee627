"""Checkpoint formats: every known format detected, the original one carried over by identity, an
unknown library's file refused, and other libraries' detectors converted when given as MODEL.WEIGHT
(refused, naming the config to use, when the config does not fit)."""
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fcos_core.config import load_config
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils.checkpoint import DetectronCheckpointer
from fcos_core.utils.formats import ConversionReport
from fcos_core.utils.formats.convert import (
    CheckpointFormatError, ConfigMismatchError, convert_checkpoint, refuse_config_mismatch,
)
from fcos_core.utils.formats.detect import FORMATS, detect_format

ROOT = Path(__file__).resolve().parents[2]
TV_CONFIG = str(ROOT / "configs" / "torchvision" / "fcos_resnet50_fpn_coco.yaml")
IMPRV_CONFIG = str(ROOT / "configs" / "fcos" / "fcos_imprv_R_50_FPN_1x.yaml")


def _cfg(path, *opts):
    return load_config(path, ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", *opts])


@pytest.fixture(scope="module")
def tv_state():
    """torchvision's COCO FCOS (random weights), as its state_dict() is published."""
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(0)
    return fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()


@pytest.fixture(scope="module")
def tv_file(tv_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "fcos_resnet50_fpn_coco-99b0c3e2.pth"
    torch.save(tv_state, path)
    return path


def _our_state():
    return OrderedDict([("backbone.body.stem.conv1.weight", torch.rand(4, 3, 7, 7)),
                        ("backbone.fpn.fpn_inner2.weight", torch.rand(8, 4, 1, 1)),
                        ("rpn.head.cls_logits.bias", torch.rand(80))])


def _mmdet_state():
    """A few tensors under mmdetection's FCOS names (mmdet/models/dense_heads/fcos_head.py)."""
    return OrderedDict([("backbone.conv1.weight", torch.rand(64, 3, 7, 7)),
                        ("backbone.bn1.weight", torch.rand(64)),
                        ("backbone.layer1.0.conv1.weight", torch.rand(64, 64, 1, 1)),
                        ("neck.lateral_convs.0.conv.weight", torch.rand(256, 512, 1, 1)),
                        ("neck.fpn_convs.0.conv.weight", torch.rand(256, 256, 3, 3)),
                        ("bbox_head.cls_convs.0.conv.weight", torch.rand(256, 256, 3, 3)),
                        ("bbox_head.cls_convs.0.gn.weight", torch.rand(256)),
                        ("bbox_head.reg_convs.0.conv.weight", torch.rand(256, 256, 3, 3)),
                        ("bbox_head.conv_cls.weight", torch.rand(80, 256, 3, 3)),
                        ("bbox_head.conv_cls.bias", torch.rand(80)),
                        ("bbox_head.conv_reg.weight", torch.rand(4, 256, 3, 3)),
                        ("bbox_head.conv_centerness.weight", torch.rand(1, 256, 3, 3)),
                        ("bbox_head.scales.0.scale", torch.ones(()))])


def test_every_format_is_detected(tv_state):
    import torchvision

    ours = _our_state()
    cases = {
        "fcos": [ours, {"model": ours, "iteration": 90000},
                 {"model": OrderedDict(("module." + k, v) for k, v in ours.items())}],
        "torchvision_fcos": [tv_state, {"model": tv_state, "epoch": 25}],  # bare, torchvision's references
        "mmdet_fcos": [_mmdet_state(), {"state_dict": _mmdet_state(), "meta": {"CLASSES": ("a", "b")}}],
        "torchvision_imagenet": [torchvision.models.resnet18(weights=None).state_dict(),
                                 torchvision.models.mobilenet_v2(weights=None).state_dict()],
        "detectron_pkl": [{"blobs": {"conv1_w": np.zeros((64, 3, 7, 7)), "res2_0_branch2a_w": np.zeros(3)}},
                          {"res_conv1_bn_s": np.zeros(64), "res2_0_branch2a_w": np.zeros(3)}],
        "unknown": [{"backbone.bottom_up.stem.conv1.weight": torch.rand(1)},  # detectron2
                    {"model": {"encoder.layers.0.weight": torch.rand(1)}}, {}, torch.rand(3), [1, 2]],
    }
    assert set(cases) == set(FORMATS) | {"unknown"}
    for fmt, checkpoints in cases.items():
        for checkpoint in checkpoints:
            assert detect_format(checkpoint) == fmt, (fmt, str(checkpoint)[:80])


def test_the_original_format_converts_by_identity():
    ours = _our_state()
    checkpoint = {"model": OrderedDict(("module." + k, v) for k, v in ours.items()), "iteration": 90000,
                  "optimizer": {"state": {}}}
    state, report = convert_checkpoint(checkpoint, "FCOS_imprv_R_50_FPN_1x.pth")
    assert list(state) == list(ours) and all(state[k] is ours[k] for k in ours)
    assert report.source == "original" and report.mapped == [("module." + k, k) for k in ours]
    assert not report.dropped and not report.filled and not report.required_config
    assert any("'module.' prefix stripped" in n for n in report.notes)
    assert any("iteration" in n and "optimizer" in n for n in report.notes)
    state, report = convert_checkpoint(ours, "bare.pth")
    assert list(state) == list(ours) and report.mapped == [(k, k) for k in ours] and not report.notes


def test_an_unknown_library_is_refused_naming_file_keys_and_formats():
    checkpoint = {"model": OrderedDict((f"backbone.bottom_up.res{i}.conv1.weight", torch.rand(1)) for i in range(9)),
                  "__author__": "someone"}
    with pytest.raises(CheckpointFormatError) as info:
        convert_checkpoint(checkpoint, "/data/d2_model.pth")
    msg = str(info.value)
    assert "/data/d2_model.pth is not a checkpoint of a format we know" in msg
    assert "'model', '__author__'" in msg and "'backbone.bottom_up.res0.conv1.weight'" in msg and "(9 in all)" in msg
    for name in FORMATS:
        assert f"  {name}: " in msg


def test_imagenet_weights_are_not_converted_but_pointed_at_model_weight():
    import torchvision

    expected = r"R-50.pth is a torchvision ImageNet classifier.*MODEL.WEIGHT as it is"
    with pytest.raises(CheckpointFormatError, match=expected):
        convert_checkpoint(torchvision.models.resnet18(weights=None).state_dict(), "R-50.pth")


def test_a_config_that_does_not_fit_is_named_key_by_key():
    report = ConversionReport(source="torchvision", suggested_config="torchvision/fcos_resnet50_fpn_coco.yaml",
                              required_config={"MODEL.RESNETS.STRIDE_IN_1X1": False,
                                               "MODEL.FCOS.CENTERNESS_ON_REG": True,
                                               "MODEL.FCOS.NUM_CLASSES": 91,  # fine-tuning changes it: not refused
                                               "MODEL.FCOS.FPN_STRIDES": [8, 16, 32, 64, 128]})
    cfg = _cfg(IMPRV_CONFIG)
    with pytest.raises(ConfigMismatchError) as info:
        refuse_config_mismatch(cfg, report, "tv.pth")
    msg = str(info.value)
    assert msg.startswith("tv.pth holds torchvision's FCOS")
    assert "MODEL.RESNETS.STRIDE_IN_1X1: the config has True, the weights need False" in msg
    assert "use configs/torchvision/fcos_resnet50_fpn_coco.yaml" in msg
    assert "CENTERNESS_ON_REG" not in msg and "NUM_CLASSES" not in msg and "FPN_STRIDES" not in msg
    refuse_config_mismatch(_cfg(IMPRV_CONFIG, "MODEL.RESNETS.STRIDE_IN_1X1", "False"), report, "tv.pth")


def test_torchvision_fcos_as_model_weight_is_refused_by_an_original_config(tv_file):
    cfg = _cfg(IMPRV_CONFIG)
    # the file is refused before any tensor is copied, so a stand-in model is enough
    with pytest.raises(ConfigMismatchError) as info:
        DetectronCheckpointer(cfg, nn.Linear(1, 1)).load(str(tv_file), use_latest=False)
    msg = str(info.value)
    assert f"{tv_file} holds torchvision's FCOS" in msg
    assert "MODEL.RESNETS.STRIDE_IN_1X1: the config has True, the weights need False" in msg
    assert "use configs/torchvision/fcos_resnet50_fpn_coco.yaml" in msg


@pytest.fixture(scope="module")
def tv_model_5_classes():
    return build_detection_model(_cfg(TV_CONFIG, "MODEL.FCOS.NUM_CLASSES", "5"))


def test_torchvision_fcos_as_model_weight_loads_and_fine_tunes(tv_file, tv_state, tv_model_5_classes, tmp_path, caplog):
    """MODEL.WEIGHT = torchvision's file: converted on load (summary logged); fine-tuning to 4
    classes keeps every tensor but the classifier, which gets the FCOS head's initialisation."""
    model = tv_model_5_classes
    cfg = _cfg(TV_CONFIG, "MODEL.FCOS.NUM_CLASSES", "5", "MODEL.FCOS.PRIOR_PROB", "0.01")
    ck = DetectronCheckpointer(cfg, model, save_dir=str(tmp_path), save_to_disk=True)
    with caplog.at_level("INFO"):
        ck.resume_or_load(str(tv_file))
    assert "converted on load: torchvision:" in caplog.text and "tensors mapped" in caplog.text
    loaded = model.state_dict()
    tv_conv = tv_state["backbone.body.layer4.2.conv3.weight"]
    assert torch.equal(loaded["backbone.body.layer4.2.conv3.weight"], tv_conv)
    assert torch.equal(loaded["rpn.head.centerness.weight"], tv_state["head.regression_head.bbox_ctrness.weight"])
    assert torch.allclose(model.rpn.head.cls_logits.bias, torch.full((4,), -math.log(0.99 / 0.01)))
    assert "rpn.head.cls_logits.weight (model (4, 256, 3, 3), file" in caplog.text

