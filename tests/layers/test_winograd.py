"""Winograd F(4x4, 3x3) convolutions (fcos_core/layers/winograd.py, csrc/winograd): the compiled
kernel and the pure-PyTorch reference against ``F.conv2d`` in float64 (exact up to rounding) and
float32 (within the algorithm's rounding), on odd sizes, maps smaller than a tile, channel counts
off the kernel's block, batches and non-contiguous inputs; the module and the model walk."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcos_core.layers import _extension
from fcos_core.layers.winograd import (WinogradConv2d, winograd_conv3x3, winograd_conv3x3_reference,
                                       winograd_convs_for_inference, winograd_filter_transform)

KERNEL = pytest.mark.skipif(not _extension.has_kernel("winograd_conv3x3", "cpu"),
                            reason="fcos_core._C not built (pip install --no-build-isolation -e .)")

# (N, Cin, Cout, H, W): odd sizes, a map smaller than one 4x4 tile, Cin / Cout across the kernel's
# 64-channel blocks, one output channel (centerness), a batch of two
SHAPES = [(1, 3, 5, 7, 9), (2, 16, 8, 13, 4), (1, 70, 130, 17, 23), (1, 8, 1, 2, 3), (2, 64, 4, 8, 8), (1, 5, 6, 1, 1)]


def _case(shape, dtype, seed=0):
    n, cin, cout, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g, dtype=dtype)
    weight = torch.randn(cout, cin, 3, 3, generator=g, dtype=dtype)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    return x, weight, bias


def _direct64(x, weight, bias, relu=False):
    y = F.conv2d(x.double(), weight.double(), bias.double() if bias is not None else None, padding=1)
    return y.clamp_min(0) if relu else y


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_equals_conv2d_in_float64(shape):
    x, weight, bias = _case(shape, torch.float64)
    y = winograd_conv3x3_reference(x, winograd_filter_transform(weight), bias)
    torch.testing.assert_close(y, _direct64(x, weight, bias), rtol=0, atol=1e-10)


@KERNEL
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_kernel_equals_conv2d_in_float64(shape, relu):
    x, weight, bias = _case(shape, torch.float64)
    y = winograd_conv3x3(x, winograd_filter_transform(weight), bias, relu)
    assert y.shape == (shape[0], shape[2], shape[3], shape[4])
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, _direct64(x, weight, bias, relu), rtol=0, atol=1e-10)


@KERNEL
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_in_float32_within_winograd_rounding(shape):
    """F(4x4, 3x3) rounds more than the direct convolution (transform constants up to 8 and 1/6):
    within 1e-4 of the output's scale here, and equal to the float32 reference's rounding."""
    x, weight, bias = _case(shape, torch.float32)
    u = winograd_filter_transform(weight)
    expected = _direct64(x, weight, bias)
    y = winograd_conv3x3(x, u, bias)
    assert y.dtype == torch.float32
    scale = expected.abs().max().item()
    assert (y.double() - expected).abs().max().item() < 1e-4 * scale
    torch.testing.assert_close(y, winograd_conv3x3_reference(x, u, bias), rtol=0, atol=1e-5 * scale)


@KERNEL
def test_kernel_takes_any_memory_format_and_strides_without_bias():
    x, weight, _ = _case((2, 24, 12, 11, 10), torch.float64)
    u = winograd_filter_transform(weight)
    expected = _direct64(x, weight, None)
    for variant in (x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3).transpose(2, 3),
                    torch.cat([x, x], dim=1)[:, ::2]):
        ref = _direct64(variant, weight, None)
        torch.testing.assert_close(winograd_conv3x3(variant, u, None), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(winograd_conv3x3(x, u, None), expected, rtol=0, atol=1e-10)


@KERNEL
def test_kernel_errors_name_the_bad_argument():
    x, weight, bias = _case((1, 4, 6, 5, 5), torch.float32)
    u = winograd_filter_transform(weight)
    with pytest.raises(RuntimeError, match="weight_wino must be \\[36, Cin=4"):
        torch.ops.fcos_core.winograd_conv3x3(x, u[:, :3], bias, False)
    with pytest.raises(RuntimeError, match="bias must be \\[Cout=6\\]"):
        torch.ops.fcos_core.winograd_conv3x3(x, u, bias[:5], False)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.fcos_core.winograd_conv3x3(x.half(), u.half(), None, False)
    with pytest.raises(ValueError, match="weight_wino \\[36, C, Cout\\]"):
        winograd_conv3x3(x, u[:35], bias)


def test_reference_runs_when_the_kernel_is_missing(monkeypatch):
    x, weight, bias = _case((1, 6, 5, 9, 7), torch.float64)
    monkeypatch.setattr(_extension, "has_kernel", lambda op, device: False)
    monkeypatch.setattr(_extension, "_warned", set())
    with pytest.warns(RuntimeWarning, match="winograd_conv3x3: .*pure-PyTorch reference"):
        y = winograd_conv3x3(x, winograd_filter_transform(weight), bias, relu=True)
    torch.testing.assert_close(y, _direct64(x, weight, bias, relu=True), rtol=0, atol=1e-10)


def test_module_from_conv_and_what_it_refuses():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1).double()
    module = WinogradConv2d.from_conv(conv)
    assert "8, 16, kernel_size=(3, 3), F(4x4, 3x3)" in repr(module)
    x = torch.randn(2, 8, 10, 14, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(module(x), conv(x), rtol=0, atol=1e-10)
    for bad in (nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=2, dilation=2),
                nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=0),
                nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")):
        assert not WinogradConv2d.supports(bad)
        with pytest.raises(ValueError, match="only nn.Conv2d 3x3 / stride 1"):
            WinogradConv2d.from_conv(bad)
    with pytest.raises(RuntimeError, match="inference only"):
        module(x.requires_grad_())


def test_model_walk_replaces_only_supported_convs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Conv2d(8, 4, 3, padding=1)),
                          nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(1, 3, 17, 19)
    with torch.no_grad():
        expected = model(x)
        assert winograd_convs_for_inference(model) == 2
        y = model(x)
    assert [type(m).__name__ for m in (model[0], model[2][0], model[2][1], model[3])] == [
        "WinogradConv2d", "Conv2d", "WinogradConv2d", "Conv2d"]
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-4 * expected.abs().max().item())
    with pytest.raises(ValueError, match="TEST.WINOGRAD: the model has no 3x3 stride-1 convolution"):
        winograd_convs_for_inference(nn.Sequential(nn.Conv2d(3, 3, 1)))
