"""Folding conv + batch norm for inference (fcos_core.modeling.fuse, layers.batch_norm.fuse_conv_bn):
the folded backbones and detector give the unfolded outputs, the original model and its
checkpoints are untouched."""
from pathlib import Path

import pytest
import torch
from torch import nn

from fcos_core.config import load_config
from fcos_core.layers.batch_norm import FrozenBatchNorm2d, fuse_conv_bn
from fcos_core.layers.dcn import DFConv2d
from fcos_core.modeling.backbone.mobilenet import MobileNetV2
from fcos_core.modeling.backbone.resnet import ResNet
from fcos_core.modeling.detector import build_detection_model
from fcos_core.modeling.fuse import count_foldable_pairs, fuse_conv_bn_for_inference
from fcos_core.utils.checkpoint import DetectronCheckpointer

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "fcos"



def randomize_norms(model, seed=0):
    """Non-trivial statistics and affine parameters in every (frozen) batch norm of ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.25)
    return model


def assert_close_relative(actual, expected, tol=1e-4):
    """Equal to ``tol`` relative to the tensor's magnitude (random ResNets reach the thousands)."""
    scale = expected.abs().max().clamp(min=1.0)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)
    assert (actual - expected).norm() <= tol * expected.norm()


def norms_left(model):
    return [n for n, m in model.named_modules() if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_fuse_conv_bn_equals_conv_then_norm(norm):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=norm == "BN")
    bn = randomize_norms(FrozenBatchNorm2d(6) if norm == "FrozenBN" else nn.BatchNorm2d(6, eps=1e-3).eval())
    fused = fuse_conv_bn(conv, bn)
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    expected = bn.double()(conv.double()(x))
    torch.testing.assert_close(fused.double()(x), expected, rtol=1e-6, atol=1e-6)
    assert fused is not conv and fused.bias is not None


def test_fuse_conv_bn_refuses_what_it_cannot_fold():
    with pytest.raises(ValueError, match="training mode"):
        fuse_conv_bn(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4).train())
    with pytest.raises(TypeError):
        fuse_conv_bn(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4))
    with pytest.raises(ValueError, match="channels"):
        fuse_conv_bn(nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(5))


@pytest.mark.parametrize("depth,pairs", [(50, 1 + 16 * 3 + 4), (18, 1 + 8 * 2 + 3)])
def test_folded_resnet_equals_unfolded(depth, pairs):
    torch.manual_seed(0)
    body = randomize_norms(ResNet(depth=depth, out_levels=(2, 3, 4, 5))).eval()
    assert count_foldable_pairs(body) == pairs
    folded = fuse_conv_bn_for_inference(body)
    assert norms_left(folded) == [] and len(norms_left(body)) == pairs
    x = torch.randn(2, 3, 64, 96)
    x_copy = x.clone()
    with torch.no_grad():
        expected = body(x)
        actual = folded(x)
    assert torch.equal(x, x_copy)  # the in-place residual adds write only to conv outputs
    for a, e in zip(actual, expected):
        assert_close_relative(a, e)


def test_folded_resnet_with_dcn_keeps_the_deformable_conv_norm():
    torch.manual_seed(0)
    body = randomize_norms(ResNet(depth=50, stage_with_dcn=(False, False, False, True))).eval()
    folded = fuse_conv_bn_for_inference(body)
    assert isinstance(folded.layer4[0].conv2, DFConv2d)
    assert norms_left(folded) == ["layer4.{}.bn2".format(i) for i in range(3)]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, e in zip(folded(x), body(x)):
            assert_close_relative(a, e)


@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_folded_mobilenet_v2_equals_unfolded(norm):
    torch.manual_seed(0)
    body = randomize_norms(MobileNetV2(norm=norm)).eval()
    folded = fuse_conv_bn_for_inference(body)
    assert norms_left(folded) == []
    assert not body.training and not folded.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, e in zip(folded(x), body(x)):
            assert_close_relative(a, e)


def test_trainable_batch_norm_is_folded_with_running_statistics():
    body = randomize_norms(MobileNetV2(norm="BN")).train()
    folded = fuse_conv_bn_for_inference(body)
    assert body.training and not folded.training  # the original keeps its mode
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = body.eval()(x)
        for a, e in zip(folded(x), expected):
            assert_close_relative(a, e)


def test_norms_without_running_statistics_are_left_alone():
    block = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4, track_running_stats=False),
                          nn.Conv2d(4, 4, 1, bias=False), nn.GroupNorm(2, 4))
    assert count_foldable_pairs(block) == 0
    folded = fuse_conv_bn_for_inference(block)
    assert [type(m) for m in folded] == [type(m) for m in block]


def test_channels_last_is_kept():
    body = randomize_norms(ResNet(depth=18)).eval().to(memory_format=torch.channels_last)
    folded = fuse_conv_bn_for_inference(body)
    assert folded.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for a, e in zip(folded(x), body(x)):
            assert_close_relative(a, e)


def test_folded_detector_gives_the_same_detections_and_leaves_the_original_alone(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(str(CONFIGS / "fcos_R_50_FPN_1x.yaml"),
                      ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", "MODEL.FCOS.INFERENCE_TH", "0.3"])
    model = randomize_norms(build_detection_model(cfg))
    nn.init.normal_(model.rpn.head.cls_logits.bias, std=1.0)  # plenty of detections
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fuse_conv_bn_for_inference(model)
    assert model.training  # the original is not touched: mode, keys, values
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert "backbone.body.stem.conv1.bias" in folded.state_dict()
    assert "backbone.body.stem.bn1.weight" not in folded.state_dict()

    images = [torch.randn(3, 96, 128)]
    model.eval()
    with torch.no_grad():
        expected = model(images)[0]
        actual = folded(images)[0]
    assert len(expected) > 0
    assert torch.equal(actual.get_field("labels"), expected.get_field("labels"))
    torch.testing.assert_close(actual.bbox, expected.bbox, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(actual.get_field("scores"), expected.get_field("scores"), rtol=1e-4, atol=1e-5)

    # checkpoints are still written with the original keys, and load into a fresh model
    DetectronCheckpointer(cfg, model, save_dir=str(tmp_path), save_to_disk=True).save("model_test")
    fresh = build_detection_model(cfg)
    DetectronCheckpointer(cfg, fresh, save_dir=str(tmp_path)).load(str(tmp_path / "model_test.pth"), use_latest=False)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
