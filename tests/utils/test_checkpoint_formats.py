"""Checkpoint formats: every known format detected, the original one carried over by identity, an
unknown library's file refused, and other libraries' detectors converted when given as MODEL.WEIGHT
(refused, naming the config to use, when the config does not fit)."""
import math
import pickle
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



def _mmdet_r50_fcos_state():
    """A whole mmdetection FCOS R-50 (caffe, GN head, no tricks): its key names and shapes
    (mmdet/models/backbones/resnet.py, necks/fpn.py, dense_heads/fcos_head.py), values 0.01."""
    def bn(p, n):
        return [(f"{p}.{leaf}", torch.full((n,), 0.01)) for leaf in ("weight", "bias", "running_mean", "running_var")]

    sd = [("backbone.conv1.weight", torch.full((64, 3, 7, 7), 0.01))] + bn("backbone.bn1", 64)
    c_in = 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        width, c_out = 64 * 2 ** stage, 256 * 2 ** stage
        for b in range(blocks):
            p = f"backbone.layer{stage + 1}.{b}"
            for i, shape in enumerate([(width, c_in, 1, 1), (width, width, 3, 3), (c_out, width, 1, 1)], 1):
                sd += [(f"{p}.conv{i}.weight", torch.full(shape, 0.01))] + bn(f"{p}.bn{i}", shape[0])
            if b == 0:
                sd += [(f"{p}.downsample.0.weight", torch.full((c_out, c_in, 1, 1), 0.01))]
                sd += bn(f"{p}.downsample.1", c_out)
            c_in = c_out
    convs = [(f"neck.lateral_convs.{i}.conv", (256, c, 1, 1)) for i, c in enumerate((512, 1024, 2048))]
    convs += [(f"neck.fpn_convs.{i}.conv", (256, 256, 3, 3)) for i in range(5)]
    convs += [(f"bbox_head.{name}", (out, 256, 3, 3)) for name, out in
              (("conv_cls", 80), ("conv_reg", 4), ("conv_centerness", 1))]
    sd += [(f"{p}.{leaf}", torch.full(shape if leaf == "weight" else shape[:1], 0.01))
           for p, shape in convs for leaf in ("weight", "bias")]
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            p = f"bbox_head.{tower}.{i}"
            sd += [(f"{p}.conv.weight", torch.full((256, 256, 3, 3), 0.01))]
            sd += [(f"{p}.gn.weight", torch.ones(256)), (f"{p}.gn.bias", torch.zeros(256))]
    sd += [(f"bbox_head.scales.{i}.scale", torch.tensor(1.0)) for i in range(5)]
    return OrderedDict(sd)


MMDET_CONFIG = str(ROOT / "configs" / "mmdetection" / "fcos_r50_caffe_fpn_gn-head_1x_coco.yaml")


def test_an_mmdetection_file_as_model_weight_loads_with_its_class_names(tmp_path):
    """mmdetection 2.x layout: {"meta": {"CLASSES": ...}, "state_dict": ...}, loaded strictly into the
    mmdetection config's model; an original config is refused naming that config."""
    names = tuple(f"class{i}" for i in range(80))
    path = tmp_path / "mmdet_fcos_r50.pth"
    torch.save({"meta": {"CLASSES": names, "epoch": 12}, "state_dict": _mmdet_r50_fcos_state()}, path)
    cfg = _cfg(MMDET_CONFIG)
    model = build_detection_model(cfg)
    extra = DetectronCheckpointer(cfg, model).load(str(path), use_latest=False, weights_only=True)
    assert extra["categories"] == ["__background"] + list(names)
    assert torch.equal(model.state_dict()["rpn.head.scales.3.scale"], torch.ones(1))
    assert torch.equal(model.state_dict()["backbone.fpn.top_blocks.p7.bias"], torch.full((256,), 0.01))
    with pytest.raises(ConfigMismatchError) as info:
        DetectronCheckpointer(_cfg(IMPRV_CONFIG), nn.Linear(1, 1)).load(str(path), use_latest=False)
    msg = str(info.value)
    assert f"{path} holds mmdetection's FCOS" in msg and "MODEL.RESNETS.FROZEN_BN_EPS: the config has 0.0" in msg
    assert "use configs/mmdetection/fcos_r50_caffe_fpn_gn-head_1x_coco.yaml" in msg


def test_an_mmengine_file_needs_trust_and_gives_its_dataset_classes(tmp_path):
    """mmdetection 3.x (mmengine) files keep numpy objects in "message_hub": refused by
    weights_only, converted with trust; the names come from meta["dataset_meta"]["classes"]."""
    from fcos_core.engine.conversion import UntrustedCheckpointError, convert_file

    path = tmp_path / "mmdet3.pth"
    torch.save({"meta": {"dataset_meta": {"classes": ("cat", "dog")}}, "state_dict": _mmdet_r50_fcos_state(),
                "message_hub": {"log_scalars": {"loss": np.zeros(3)}}}, path)
    with pytest.raises(UntrustedCheckpointError, match=r"(?s)mmdet3.pth: .*\(numpy.*'message_hub'.*--trust-file"):
        convert_file(path, tmp_path / "out.pth")
    # the checkpointer refuses it too, pointing at the tool
    refused = r"(?s)refusing to load .*mmdet3.pth.*convert_checkpoint.py --trust-file"
    with pytest.raises(pickle.UnpicklingError, match=refused):
        DetectronCheckpointer(None, nn.Linear(1, 1)).load(str(path), use_latest=False)
    result = convert_file(path, tmp_path / "out.pth", trust_file=True)
    assert result.fmt == "mmdet_fcos" and result.categories == ["__background", "cat", "dog"]
    saved = torch.load(tmp_path / "out.pth", weights_only=True)
    assert saved["categories"] == result.categories and "rpn.head.cls_logits.weight" in saved["model"]


def test_an_mmdetection_release_is_known_by_its_file_name():
    """The 1x and 2x releases hold the same tensors: the downloaded file's name says which it is."""
    checkpoint = {"meta": {"CLASSES": ("a",) * 80}, "state_dict": _mmdet_r50_fcos_state()}
    name = "fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco"
    _, report = convert_checkpoint(checkpoint, f"/cache/checkpoints/{name}-d92ceeea.pth")
    assert report.suggested_config == f"mmdetection/{name}.yaml"
    _, report = convert_checkpoint(checkpoint, "/data/my_fcos.pth")  # no zoo name: the tensors' guess
    assert report.suggested_config == "mmdetection/fcos_r50_caffe_fpn_gn-head_1x_coco.yaml"
