"""DFConv2d (deformable conv v1 / modulated v2 via torchvision): original key names, behaviour at init,
offset layout, shapes and backward."""
import pytest
import torch
import torch.nn.functional as F

from fcos_core.layers.dcn import DeformConv, DFConv2d


def test_state_dict_keys_match_original():
    m = DFConv2d(8, 16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    # original: offset = Conv2d(in, dg * 27, 3) with bias, conv = ModulatedDeformConv(bias=False)
    assert shapes == {"offset.weight": (27, 8, 3, 3), "offset.bias": (27,), "conv.weight": (16, 8, 3, 3)}
    m = DFConv2d(8, 16, with_modulated_dcn=False, deformable_groups=2, bias=True)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "offset.weight": (36, 8, 3, 3), "offset.bias": (36,), "conv.weight": (16, 8, 3, 3), "conv.bias": (16,)
    }


def _zero_offsets(m):
    with torch.no_grad():
        m.offset.weight.zero_()
        m.offset.bias.zero_()
    return m


def test_offset_conv_starts_like_the_original():
    # kaiming_uniform(a=1) weights (bound sqrt(3 / fan_in)) and a zero bias, as maskrcnn-benchmark
    torch.manual_seed(0)
    m = DFConv2d(8, 16)
    bound = (3.0 / (8 * 9)) ** 0.5
    w = m.offset.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound
    assert bool((m.offset.bias == 0).all())


@pytest.mark.parametrize("bias", [False, True])
def test_modulated_with_zero_offsets_is_half_a_plain_conv(bias):
    # offsets 0 and masks sigmoid(0) = 0.5: every sampled tap is halved, the bias is not
    torch.manual_seed(0)
    m = _zero_offsets(DFConv2d(4, 6, bias=bias))
    if bias:
        torch.nn.init.normal_(m.conv.bias)
    x = torch.randn(2, 4, 9, 11)
    expected = 0.5 * F.conv2d(x, m.conv.weight, padding=1)
    if bias:
        expected = expected + m.conv.bias.reshape(1, -1, 1, 1)
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,dilation,groups,deformable_groups",
                         [(1, 1, 1, 1), (2, 1, 1, 1), (1, 2, 1, 1), (2, 1, 2, 2)])
def test_plain_dcn_with_zero_offsets_is_plain_conv(stride, dilation, groups, deformable_groups):
    torch.manual_seed(0)
    m = _zero_offsets(DFConv2d(4, 6, with_modulated_dcn=False, stride=stride, dilation=dilation, groups=groups,
                               deformable_groups=deformable_groups))
    x = torch.randn(2, 4, 13, 10)
    expected = F.conv2d(x, m.conv.weight, stride=stride, padding=dilation, dilation=dilation, groups=groups)
    y = m(x)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_stride_two_output_shape():
    m = DFConv2d(3, 5, stride=2)
    assert m(torch.randn(1, 3, 17, 16)).shape == (1, 5, 9, 8)
    assert DFConv2d(3, 5, stride=2)(torch.randn(0, 3, 17, 16)).shape == (0, 5, 9, 8)


def test_offset_layout_dy_then_dx_per_tap():
    # offset channels: for each tap k, (dy, dx) at channels 2k, 2k + 1; masks follow
    torch.manual_seed(0)
    m = _zero_offsets(DFConv2d(3, 4))
    with torch.no_grad():
        m.offset.bias[0:18:2] = 0.0   # dy
        m.offset.bias[1:18:2] = 1.0   # dx: sample one pixel to the right
        m.offset.bias[18:] = 30.0     # masks sigmoid(30) == 1 in float32
    x = torch.randn(1, 3, 6, 7)
    # tap (i, j) of output (y, x) reads input (y + i - 1, x + j - 1 + 1): pad 0 left, 2 right
    expected = F.conv2d(F.pad(x, (0, 2, 1, 1)), m.conv.weight)
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)
    # swapping dy and dx would shift downwards instead
    assert not torch.allclose(m(x), F.conv2d(F.pad(x, (1, 1, 0, 2)), m.conv.weight), atol=1e-3)


def test_backward_reaches_input_weight_and_offsets():
    torch.manual_seed(0)
    m = DFConv2d(4, 6, deformable_groups=2)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    m(x).square().sum().backward()
    for t in (x.grad, m.conv.weight.grad, m.offset.weight.grad, m.offset.bias.grad):
        assert t is not None and torch.isfinite(t).all()
    assert m.conv.weight.grad.abs().sum() > 0 and m.offset.weight.grad.abs().sum() > 0


def test_deform_conv_gradcheck_float64():
    torch.manual_seed(0)
    conv = DeformConv(2, 3, 3, padding=1, bias=True).double()
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    offset = (torch.rand(1, 18, 4, 4, dtype=torch.float64) - 0.5).requires_grad_()
    mask = torch.rand(1, 9, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, o, k: conv(a, o, k), (x, offset, mask))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    m = DFConv2d(4, 6, stride=2, bias=True)
    torch.nn.init.normal_(m.offset.weight, std=0.1)
    x = torch.randn(2, 4, 15, 12)
    torch.testing.assert_close(m.cuda()(x.cuda()).cpu(), m.cpu()(x), rtol=1e-4, atol=1e-4)
