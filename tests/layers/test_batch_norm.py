"""FrozenBatchNorm2d: equals eval BatchNorm2d with eps = 0, keeps dtype / memory format, loads BN state dicts."""
import pytest
import torch
from torch import nn

from fcos_core.layers.batch_norm import FrozenBatchNorm2d, conv_then_norm


def make_pair(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    frozen = FrozenBatchNorm2d(n)
    frozen.weight.copy_(torch.rand(n, generator=g) + 0.5)
    frozen.bias.copy_(torch.randn(n, generator=g))
    frozen.running_mean.copy_(torch.randn(n, generator=g))
    frozen.running_var.copy_(torch.rand(n, generator=g) * 0.01 + 1e-4)  # small: eps would matter
    ref = nn.BatchNorm2d(n, eps=0.0).eval()
    ref.load_state_dict(frozen.state_dict(), strict=False)
    return frozen, ref


def test_state_dict_keys_and_no_parameters():
    m = FrozenBatchNorm2d(4)
    assert list(m.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert list(m.parameters()) == []
    assert repr(m) == "FrozenBatchNorm2d(4)"


@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_batchnorm_eval_without_eps(channels_last):
    frozen, ref = make_pair()
    x = torch.randn(2, 6, 5, 7)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        y, expected = frozen(x), ref(x)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-4)
    # an epsilon of 1e-5 would change the result noticeably with these small variances
    ref.eps = 1e-5
    assert not torch.allclose(y, ref(x), rtol=1e-5, atol=1e-4)
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_output_in_input_dtype(dtype):
    frozen, _ = make_pair()
    frozen.running_var.fill_(1.0)
    x = torch.randn(2, 6, 4, 4)
    y = frozen(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), frozen(x), rtol=2e-2, atol=2e-2)


def test_gradient_reaches_input_only():
    frozen, _ = make_pair()
    x = torch.randn(1, 6, 3, 3, requires_grad=True)
    frozen(x).sum().backward()
    scale = frozen.weight * frozen.running_var.rsqrt()
    torch.testing.assert_close(x.grad, scale.reshape(1, -1, 1, 1).expand_as(x))


def test_loads_torchvision_style_state_dict():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5)
    bn.num_batches_tracked.fill_(7)
    source = nn.Sequential(nn.Conv2d(3, 3, 1), bn).state_dict()
    assert "1.num_batches_tracked" in source
    target = nn.Sequential(nn.Conv2d(3, 3, 1), FrozenBatchNorm2d(3))
    result = target.load_state_dict(source, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(target[1].running_mean, torch.full((3,), 0.5))
    # the caller's dict is left whole
    assert "1.num_batches_tracked" in source


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half_channels_last():
    frozen, ref = make_pair()
    frozen.running_var.fill_(1.0)
    ref.running_var.fill_(1.0)
    x = torch.randn(2, 6, 8, 8).to(memory_format=torch.channels_last)
    y = frozen.cuda()(x.cuda().half())
    assert y.dtype == torch.float16 and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y.float().cpu(), ref(x).detach(), rtol=1e-2, atol=1e-2)


def _conv_and_frozen_norm(bias, dtype=torch.float64, stride=1, groups=1):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=1, bias=bias, groups=groups).to(dtype)
    bn = FrozenBatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.25, 4.0)
    return conv, bn.to(dtype)


@pytest.mark.parametrize("bias,stride,groups", [(False, 1, 1), (True, 2, 1), (False, 1, 2)])
def test_conv_then_norm_folds_the_frozen_norm_exactly_and_keeps_gradients(bias, stride, groups):
    """conv_then_norm(x, conv, bn) == bn(conv(x)) in float64, and so are the gradients of the
    input, the conv weight and bias (the folded weight is built from the live parameter)."""
    conv, bn = _conv_and_frozen_norm(bias, stride=stride, groups=groups)
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(bn(conv(x)))
    ref = bn(conv(x))
    ref_grads = torch.autograd.grad(ref, [x] + list(conv.parameters()), g)
    out = conv_then_norm(x, conv, bn)
    grads = torch.autograd.grad(out, [x] + list(conv.parameters()), g)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # it is one convolution: no FrozenBatchNorm2d forward runs
    calls = []
    bn.register_forward_hook(lambda *a: calls.append(1))
    conv_then_norm(x, conv, bn)
    assert calls == []


def test_conv_then_norm_gradcheck():
    conv, bn = _conv_and_frozen_norm(True)
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv_then_norm(x, conv, bn), (x, conv.weight, conv.bias))


def test_conv_then_norm_channels_last_float32():
    conv, bn = _conv_and_frozen_norm(False, dtype=torch.float32)
    conv.to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 9, 11).contiguous(memory_format=torch.channels_last)
    out = conv_then_norm(x, conv, bn)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_conv_then_norm_leaves_other_norms_and_convs_unfolded():
    conv, bn = _conv_and_frozen_norm(False, dtype=torch.float32)
    x = torch.randn(2, 4, 9, 11)
    for norm in [nn.GroupNorm(2, 6), nn.Identity(), nn.BatchNorm2d(6).train()]:
        calls = []
        norm.register_forward_hook(lambda *a: calls.append(1))
        torch.testing.assert_close(conv_then_norm(x, conv, norm), norm(conv(x)))
        assert len(calls) == 2, norm  # the norm itself ran, in conv_then_norm and in the reference
    reflect = nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect", bias=False)
    torch.testing.assert_close(conv_then_norm(x, reflect, bn), bn(reflect(x)))
