"""norm_relu_conv: GroupNorm -> ReLU -> conv(s) that saves only the norm's input; against plain layers."""
import copy

import pytest
import torch
from torch import nn

from fcos_core.layers.group_norm import GroupNorm
from fcos_core.layers.norm_relu_conv import norm_relu_conv
from fcos_core.modeling.rpn.fcos.fcos import FCOSHead


def _layers(dtype=torch.float64, channels=8, outs=(8, 3)):
    torch.manual_seed(0)
    norm = GroupNorm(4, channels).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    convs = [nn.Conv2d(channels, c, 3, padding=1).to(dtype) for c in outs]
    return norm, convs


def _plain(x, norm, convs):
    a = torch.relu(norm(x))
    return [conv(a) for conv in convs]


def _params(norm, convs):
    return [norm.weight, norm.bias] + [p for c in convs for p in c.parameters()]


def test_equals_plain_layers_and_their_gradients():
    norm, convs = _layers()
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64, requires_grad=True)
    outs, ref = norm_relu_conv(x, norm, convs), _plain(x, norm, convs)
    gs = [torch.randn_like(r) for r in ref]
    grads = torch.autograd.grad(outs, [x] + _params(norm, convs), gs)
    ref_grads = torch.autograd.grad(ref, [x] + _params(norm, convs), gs)
    for a, b in zip(outs + list(grads), ref + list(ref_grads)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradcheck_float64():
    norm, convs = _layers(channels=4, outs=(4, 2))
    norm = GroupNorm(2, 4).double()
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    params = _params(norm, convs)

    def f(x, *ps):
        return tuple(norm_relu_conv(x, norm, convs))

    assert torch.autograd.gradcheck(f, (x, *params))


def test_only_some_outputs_used_and_frozen_parameters():
    norm, convs = _layers()
    for p in convs[0].parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64, requires_grad=True)
    out = norm_relu_conv(x, norm, convs)[1].sum()
    ref = _plain(x, norm, convs)[1].sum()
    got = torch.autograd.grad(out, [x, norm.weight, convs[1].weight])
    want = torch.autograd.grad(ref, [x, norm.weight, convs[1].weight])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _saved_bytes(fn):
    """Bytes of the tensors autograd keeps for the backward pass of ``fn()`` (parameters excluded)."""
    seen = {}

    def pack(t):
        if not isinstance(t, nn.Parameter):
            seen[(t.data_ptr(), t.dtype)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_keeps_only_the_norm_input():
    norm, convs = _layers(torch.float32, channels=32, outs=(32,))
    x = torch.randn(2, 32, 40, 40, requires_grad=True)
    plain = _saved_bytes(lambda: _plain(x, norm, convs))
    ours = _saved_bytes(lambda: norm_relu_conv(x, norm, convs))
    # plain: the norm's input and the ReLU output (+ small statistics); ours: the norm's input
    assert ours <= x.numel() * 4 + 1024 < plain
    assert plain >= 2 * x.numel() * 4


def _check_autocast_against_plain(device, dtype, out_tol, grad_tol):
    """Under autocast of ``dtype`` on ``device``: same output dtypes as the plain layers, outputs
    within ``out_tol`` and gradients (same dtypes) within ``grad_tol``."""
    norm, convs = _layers(torch.float32, channels=16, outs=(16, 5))
    norm, convs = norm.to(device), [c.to(device) for c in convs]
    x = torch.randn(2, 16, 12, 10, device=device).to(dtype).requires_grad_()
    with torch.autocast(device, dtype=dtype):
        outs = norm_relu_conv(x, norm, convs)
        ref = _plain(x, norm, convs)
    assert [o.dtype for o in outs] == [r.dtype for r in ref] == [dtype] * 2
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a.float(), b.float(), rtol=out_tol, atol=out_tol)
    gs = [torch.randn_like(r) for r in ref]
    grads = torch.autograd.grad(outs, [x] + _params(norm, convs), gs)
    ref_grads = torch.autograd.grad(ref, [x] + _params(norm, convs), gs)
    for a, b in zip(grads, ref_grads):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=grad_tol, atol=grad_tol)


def test_cpu_bfloat16_autocast_matches_plain_layers():
    # outputs: the same ops in the same dtypes, so equal
    _check_autocast_against_plain("cpu", torch.bfloat16, out_tol=0, grad_tol=2e-2)


def test_no_grad_runs_plain_layers():
    norm, convs = _layers(torch.float32)
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        out = norm_relu_conv(x, norm, convs)
    assert all(o.grad_fn is None for o in out)
    torch.testing.assert_close(out, _plain(x, norm, convs))


def test_rejects_what_it_cannot_recompute():
    norm, convs = _layers(torch.float32)
    with pytest.raises(TypeError, match="nn.Conv2d"):
        norm_relu_conv(torch.randn(1, 8, 4, 4), norm, [nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")])
    with pytest.raises(TypeError, match="GroupNorm"):
        norm_relu_conv(torch.randn(1, 8, 4, 4), nn.GroupNorm(4, 8, affine=False), convs)


@pytest.mark.parametrize("centerness_on_reg", [False, True])
def test_fcos_head_recomputed_towers_equal_plain_towers(centerness_on_reg):
    torch.manual_seed(0)
    head = FCOSHead(32, 5, [8, 16], num_convs=3, centerness_on_reg=centerness_on_reg).double()
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.1)
        elif isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    plain = copy.deepcopy(head)
    plain.recompute_tower_norm = False
    feats = [torch.randn(2, 32, 10, 12, dtype=torch.float64, requires_grad=True),
             torch.randn(2, 32, 5, 6, dtype=torch.float64, requires_grad=True)]

    def run(model):
        outs = model(feats)
        loss = sum(t.sin().sum() for group in outs for t in group)
        return outs, torch.autograd.grad(loss, feats + list(model.parameters()))

    (outs, grads), (ref, ref_grads) = run(head), run(plain)
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and it saves less: the towers' ReLU outputs are not kept
    assert _saved_bytes(lambda: head(feats)) < 0.8 * _saved_bytes(lambda: plain(feats))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; the CPU twin is test_cpu_bfloat16_autocast_matches_plain_layers")
def test_cuda_float16_autocast_matches_plain_layers():
    _check_autocast_against_plain("cuda", torch.float16, out_tol=1e-3, grad_tol=1e-2)
