"""Inference options (fcos_core.engine.inference): folded batch norms (TEST.FUSE_FROZEN_BN), the
autocast dtype (TEST.AMP, TEST.AMP_DTYPE, utils.env.amp_dtype_for), channels_last and Winograd
convolutions (TEST.WINOGRAD); bfloat16 inference gives nearly the float32 detections, in float32, and
Winograd convolutions the direct ones' within float32 rounding."""
import logging
from pathlib import Path

import pytest
import torch

from fcos_core.config import load_config
from fcos_core.engine.inference import compute_on_dataset, make_inference_options, prepare_for_inference
from fcos_core.layers.batch_norm import FrozenBatchNorm2d
from fcos_core.modeling.detector import build_detection_model
from fcos_core.structures.boxlist_ops import boxlist_iou
from fcos_core.structures.image_list import to_image_list
from fcos_core.utils import env
from fcos_core.utils.env import amp_dtype_for

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart" / "fcos_shapes.yaml")


def test_amp_dtype_for(monkeypatch, caplog):
    assert amp_dtype_for("cuda", False, "bfloat16") is None  # not asked for: float32
    assert amp_dtype_for("cuda", True) == torch.float16
    assert amp_dtype_for("cuda:0", True, "bfloat16") == torch.bfloat16
    monkeypatch.setattr(env, "cpu_has_fast_bf16", lambda: True)
    assert amp_dtype_for("cpu", True) == torch.bfloat16
    monkeypatch.setattr(env, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert amp_dtype_for("cpu", True) is None  # the device's choice: float32, with a warning
        assert "float32" in caplog.text
        caplog.clear()
        assert amp_dtype_for("cpu", True, "bfloat16") == torch.bfloat16  # asked for: honoured
        assert "emulated" in caplog.text
    with pytest.raises(ValueError):
        amp_dtype_for("cpu", True, "float8")


def test_make_inference_options(monkeypatch):
    monkeypatch.setattr(env, "cpu_has_fast_bf16", lambda: False)
    cfg = load_config(QUICKSTART, ["SOLVER.CHANNELS_LAST", "False"])
    assert tuple(make_inference_options(cfg)) == (None, False, True, False, False)  # defaults: fp32, folded, eager
    cfg = load_config(QUICKSTART, ["SOLVER.CHANNELS_LAST", "False", "TEST.AMP", "True",
                                   "TEST.AMP_DTYPE", "bfloat16", "TEST.FUSE_FROZEN_BN", "False"])
    assert tuple(make_inference_options(cfg)) == (torch.bfloat16, True, False, False, False)  # bf16 CPU: channels_last
    assert make_inference_options(cfg, "cuda").amp_dtype == torch.bfloat16
    assert tuple(make_inference_options(load_config(QUICKSTART, ["TEST.AMP", "True"]), "cuda")) == (
        torch.float16, True, True, False, False)  # SOLVER.CHANNELS_LAST of the quickstart config
    assert make_inference_options(load_config(QUICKSTART, ["TEST.COMPILE", "True"])).compile is True
    cfg = load_config(QUICKSTART, ["SOLVER.CHANNELS_LAST", "False", "TEST.WINOGRAD", "True"])
    assert tuple(make_inference_options(cfg, "cpu")) == (None, True, True, False, True)  # its kernel's layout


@pytest.mark.parametrize("overrides, why", [
    (["TEST.AMP", "True", "TEST.AMP_DTYPE", "bfloat16"], "TEST.AMP runs torch.bfloat16 convolutions"),
    (["TEST.BACKEND", "onnxruntime"], "TEST.BACKEND 'onnxruntime' runs the ONNX export"),
    (["MODEL.DEVICE", "cuda"], "MODEL.DEVICE is 'cuda'"),
])
def test_winograd_errors_name_the_conflicting_key(overrides, why):
    cfg = load_config(QUICKSTART, ["TEST.WINOGRAD", "True", "MODEL.DEVICE", "cpu"] + overrides)
    with pytest.raises(ValueError, match="TEST.WINOGRAD runs the PyTorch model's float32 convolutions on a CPU, "
                                         "but " + why):
        make_inference_options(cfg)


def test_prepare_for_inference_copies_and_leaves_the_model_alone():
    cfg = load_config(str(ROOT / "configs" / "fcos" / "fcos_R_50_FPN_1x.yaml"), ["MODEL.WEIGHT", ""])
    model = build_detection_model(cfg).train()
    keys = list(model.state_dict())
    assert prepare_for_inference(model, fuse_bn=False) is model and not model.training
    prepared = prepare_for_inference(model, fuse_bn=True, channels_last=True)
    assert prepared is not model and list(model.state_dict()) == keys
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in prepared.modules())
    assert prepared.backbone.body.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.backbone.body.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    unfolded = prepare_for_inference(model, fuse_bn=False, channels_last=True)
    assert unfolded is not model and any(isinstance(m, FrozenBatchNorm2d) for m in unfolded.modules())


def _match(expected, actual):
    """For each of ``expected``'s detections: the best IoU with an ``actual`` one of its label, and
    the score difference to that one."""
    iou = boxlist_iou(expected, actual)
    same = expected.get_field("labels")[:, None] == actual.get_field("labels")[None]
    best, j = torch.where(same, iou, torch.zeros_like(iou)).max(dim=1)
    return best, (expected.get_field("scores") - actual.get_field("scores")[j]).abs()


def _random_quickstart_model_and_loader():
    """The quickstart model with random weights (a classifier bias giving plenty of detections) and a
    one-batch loader of two random images."""
    torch.manual_seed(0)
    cfg = load_config(QUICKSTART, ["MODEL.FCOS.INFERENCE_TH", "0.3"])
    model = build_detection_model(cfg)
    torch.nn.init.normal_(model.rpn.head.cls_logits.bias, std=1.0)  # plenty of detections
    images = to_image_list([torch.randn(3, 96, 128), torch.randn(3, 80, 112)], 32)
    loader = [(images, None, [0, 1])]
    return model, loader


def test_bfloat16_inference_gives_nearly_the_float32_detections():
    """The quickstart model (ResNet-18 with trainable BatchNorm, folded), random weights, through
    compute_on_dataset: bfloat16 autocast + channels_last against float32 (loose tolerance)."""
    model, loader = _random_quickstart_model_and_loader()
    fp32 = compute_on_dataset(model, loader, "cpu", fuse_bn=True)
    bf16 = compute_on_dataset(model, loader, "cpu", amp_dtype=torch.bfloat16, channels_last=True, fuse_bn=True)
    for i in (0, 1):
        out = bf16[i]
        assert out.bbox.dtype == torch.float32 and out.get_field("scores").dtype == torch.float32
        assert abs(len(out) - len(fp32[i])) <= max(2, len(fp32[i]) // 10)
        top = fp32[i][fp32[i].get_field("scores").argsort(descending=True)[:10]]
        assert len(top) > 0
        iou, score_diff = _match(top, out)
        assert (iou > 0.9).all(), iou
        assert (score_diff < 0.02).all(), score_diff


def test_winograd_inference_gives_the_direct_detections():
    """The quickstart model (ResNet-18, FPN, FCOS head; random weights, folded norms) through
    compute_on_dataset: Winograd convolutions against the direct ones, in float32; the model given
    is left with its own convolutions."""
    model, loader = _random_quickstart_model_and_loader()
    direct = compute_on_dataset(model, loader, "cpu", channels_last=True, fuse_bn=True)
    wino = compute_on_dataset(model, loader, "cpu", channels_last=True, fuse_bn=True, winograd=True)
    assert not any(type(m).__name__ == "WinogradConv2d" for m in model.modules())
    prepared = prepare_for_inference(model, fuse_bn=True, channels_last=True, winograd=True)
    replaced = [n for n, m in prepared.named_modules() if type(m).__name__ == "WinogradConv2d"]
    assert "rpn.head.cls_logits" in replaced and "backbone.body.layer1.0.conv2" in replaced
    p6 = [n for n, _ in prepared.named_modules() if n.endswith(".p6")]
    assert len(p6) == 1 and p6[0] not in replaced  # stride 2
    for i in (0, 1):
        assert len(direct[i]) > 20 and len(wino[i]) == len(direct[i])
        iou, score_diff = _match(direct[i], wino[i])
        assert (iou > 0.999).all(), iou.min()
        assert (score_diff < 1e-4).all(), score_diff.max()
