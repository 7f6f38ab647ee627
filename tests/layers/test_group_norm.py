"""fcos_core.layers.GroupNorm: nn.GroupNorm with float32 statistics under CPU autocast."""
import torch
from torch import nn

from fcos_core.layers import GroupNorm


def _pair(seed=0):
    torch.manual_seed(seed)
    ours = GroupNorm(8, 32)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    ref = nn.GroupNorm(8, 32)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_float32_is_nn_groupnorm_exactly_with_the_same_keys():
    ours, ref = _pair()
    assert list(ours.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 32, 5, 7, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = ours(x), ref(x2)
    assert torch.equal(y, y2)
    y.square().sum().backward()
    y2.square().sum().backward()
    assert torch.equal(x.grad, x2.grad) and torch.equal(ours.weight.grad, ref.weight.grad)


def test_bfloat16_input_is_normalised_in_float32_and_returned_in_bfloat16():
    ours, ref = _pair(1)
    # a large common offset: bfloat16 statistics (8 significant bits) lose the variance under it
    x = (torch.randn(2, 32, 6, 6) * 0.5 + 40.0).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x)
    assert y.dtype == torch.bfloat16
    want = ref(x.float())  # float32 statistics of the same bfloat16 values
    torch.testing.assert_close(y.float(), want, rtol=1e-2, atol=2e-2)
    plain = nn.functional.group_norm(x, 8, ref.weight.to(torch.bfloat16), ref.bias.to(torch.bfloat16), ref.eps)
    # the float32 path is closer to the float32 result than bfloat16 arithmetic is
    assert (y.float() - want).abs().max() <= (plain.float() - want).abs().max()


def test_gradients_under_bfloat16_autocast_match_float32():
    ours, ref = _pair(2)
    x = torch.randn(2, 32, 6, 6)
    xb = x.to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours(xb).float().square().sum().backward()
    xf = x.to(torch.bfloat16).float().requires_grad_()
    ref(xf).square().sum().backward()
    torch.testing.assert_close(xb.grad.float(), xf.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-2, atol=1e-2)
