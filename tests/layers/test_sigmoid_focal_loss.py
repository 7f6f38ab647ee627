"""Sigmoid focal loss: compiled kernels against the pure-PyTorch reference, gradcheck, fallback."""
import warnings

import pytest
import torch
import torchvision

from fcos_core.layers import _extension
from fcos_core.layers.sigmoid_focal_loss import (
    SigmoidFocalLoss,
    _SigmoidFocalLoss,
    sigmoid_focal_loss,
    sigmoid_focal_loss_reference,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_cpu_kernels = pytest.mark.skipif(
    not _extension.has_kernel("sigmoid_focal_loss_forward", "cpu"),
    reason="fcos_core._C has no CPU focal loss kernels (build it: pip install --no-build-isolation -e .)",
)


def make_inputs(n, c, seed=0, dtype=torch.float32, ignore=True, device="cpu"):
    """Mostly-negative logits around the FCOS prior (-4.6), a few extremes, labels in -1..C."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 3 - 2
    flat = logits.view(-1)
    extremes = torch.tensor([40.0, -40.0, 100.0, -100.0, 0.0, 1e-4, -1e-4], dtype=torch.float64)
    flat[: min(flat.numel(), extremes.numel())] = extremes[: flat.numel()]
    labels = torch.randint(0 if not ignore else -1, c + 1, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.5] = 0  # mostly background
    return logits.to(device=device, dtype=dtype), labels.to(device)


def loss_and_grad(fn, logits, labels, gamma, alpha):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, labels, gamma, alpha)
    loss.backward()
    return loss.detach(), x.grad


# ------------------------------------------------------------------------------------------ CPU


@needs_cpu_kernels
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [2.0, 1.5, 0.0])
@pytest.mark.parametrize("shape", [(257, 13), (64, 80)])
def test_matches_reference(seed, dtype, gamma, shape):
    logits, labels = make_inputs(*shape, seed=seed, dtype=dtype)
    loss, grad = loss_and_grad(sigmoid_focal_loss, logits, labels, gamma, 0.25)
    ref_loss, ref_grad = loss_and_grad(sigmoid_focal_loss_reference, logits, labels, gamma, 0.25)
    assert loss.dtype == dtype and loss.dim() == 0
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(loss, ref_loss, **tol)
    torch.testing.assert_close(grad, ref_grad, **tol)


@needs_cpu_kernels
@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_gradcheck_float64(gamma):
    logits, labels = make_inputs(6, 5, seed=3, dtype=torch.float64)
    logits = (logits.clamp(-6, 6)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: _SigmoidFocalLoss.apply(x, labels, gamma, 0.25), (logits,))


@needs_cpu_kernels
def test_ignored_rows_contribute_nothing():
    logits, labels = make_inputs(100, 7, seed=4, ignore=False)
    labels[::3] = -1
    keep = labels >= 0
    loss, grad = loss_and_grad(sigmoid_focal_loss, logits, labels, 2.0, 0.25)
    loss_kept, _ = loss_and_grad(sigmoid_focal_loss, logits[keep], labels[keep], 2.0, 0.25)
    torch.testing.assert_close(loss, loss_kept, rtol=1e-6, atol=1e-6)
    assert torch.all(grad[~keep] == 0) and torch.all(grad[keep].abs().sum(1) > 0)
    # A label above C has no positive column: the same as background.
    labels_big = labels.clone()
    labels_big[labels_big == 0] = 99
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels_big, 2.0, 0.25), loss)


@needs_cpu_kernels
def test_agrees_with_torchvision_convention():
    logits, labels = make_inputs(200, 9, seed=5, ignore=False)
    one_hot = torch.nn.functional.one_hot(labels, 10)[:, 1:].float()
    expected = torchvision.ops.sigmoid_focal_loss(logits, one_hot, alpha=0.25, gamma=2.0, reduction="sum")
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, 2.0, 0.25), expected, rtol=1e-5, atol=1e-4)


@needs_cpu_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_forward_close_to_float32(dtype):
    logits, labels = make_inputs(300, 20, seed=6)
    low = logits.to(dtype)
    loss = sigmoid_focal_loss(low, labels, 2.0, 0.25)
    expected = sigmoid_focal_loss(low.float(), labels, 2.0, 0.25)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss.float(), expected, rtol=1e-2, atol=0)
    x = low.clone().requires_grad_()
    sigmoid_focal_loss(x, labels, 2.0, 0.25).backward()
    _, grad32 = loss_and_grad(sigmoid_focal_loss, low.float(), labels, 2.0, 0.25)
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.float(), grad32, rtol=2e-2, atol=2e-3)


@needs_cpu_kernels
def test_non_contiguous_logits_and_labels():
    logits, labels = make_inputs(120, 11, seed=7)
    logits_t = logits.t().contiguous().t()
    labels_s = torch.stack([labels, labels], 1)[:, 0]
    assert not logits_t.is_contiguous() and not labels_s.is_contiguous()
    loss, grad = loss_and_grad(sigmoid_focal_loss, logits_t, labels_s, 2.0, 0.25)
    ref_loss, ref_grad = loss_and_grad(sigmoid_focal_loss, logits, labels, 2.0, 0.25)
    assert torch.equal(loss, ref_loss) and torch.equal(grad, ref_grad)


@needs_cpu_kernels
def test_empty_input():
    x = torch.zeros(0, 80, requires_grad=True)
    loss = sigmoid_focal_loss(x, torch.zeros(0, dtype=torch.int64), 2.0, 0.25)
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (0, 80)


@needs_cpu_kernels
def test_deterministic_across_thread_counts():
    logits, labels = make_inputs(5000, 80, seed=8)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(loss_and_grad(sigmoid_focal_loss, logits, labels, 2.0, 0.25))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_module_repr_and_forward():
    module = SigmoidFocalLoss(gamma=2.0, alpha=0.25)
    assert repr(module) == "SigmoidFocalLoss(gamma=2.0, alpha=0.25)"
    logits, labels = make_inputs(30, 4, seed=9)
    torch.testing.assert_close(module(logits, labels), sigmoid_focal_loss_reference(logits, labels, 2.0, 0.25))


def test_invalid_inputs_raise_value_error():
    with pytest.raises(ValueError, match=r"logits.*\(5,\)"):
        sigmoid_focal_loss(torch.zeros(5), torch.zeros(5, dtype=torch.int64), 2.0, 0.25)
    with pytest.raises(ValueError, match=r"labels.*\(4,\)"):
        sigmoid_focal_loss(torch.zeros(5, 3), torch.zeros(4, dtype=torch.int64), 2.0, 0.25)
    with pytest.raises(ValueError, match="integer"):
        sigmoid_focal_loss(torch.zeros(5, 3), torch.zeros(5), 2.0, 0.25)


def test_fallback_warns_once_and_uses_reference(monkeypatch):
    monkeypatch.setattr(_extension, "has_kernel", lambda op, device_type: False)
    monkeypatch.setattr(_extension, "_warned", set())
    logits, labels = make_inputs(40, 6, seed=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss, grad = loss_and_grad(sigmoid_focal_loss, logits, labels, 2.0, 0.25)
        loss_again = sigmoid_focal_loss(logits, labels, 2.0, 0.25)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1 and _extension.BUILD_COMMAND in str(runtime[0].message)
    ref_loss, ref_grad = loss_and_grad(sigmoid_focal_loss_reference, logits, labels, 2.0, 0.25)
    assert torch.equal(loss, ref_loss) and torch.equal(loss_again, ref_loss) and torch.equal(grad, ref_grad)


# ----------------------------------------------------------------------------------------- CUDA


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [2.0, 1.5])
def test_cuda_matches_cpu(dtype, gamma):
    logits, labels = make_inputs(2000, 80, seed=11, dtype=dtype)
    loss, grad = loss_and_grad(sigmoid_focal_loss, logits, labels, gamma, 0.25)
    loss_c, grad_c = loss_and_grad(sigmoid_focal_loss, logits.cuda(), labels.cuda(), gamma, 0.25)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(loss_c.cpu(), loss, **tol)
    torch.testing.assert_close(grad_c.cpu(), grad, **tol)


@needs_cuda
def test_cuda_gradcheck_ignored_rows_and_determinism():
    logits, labels = make_inputs(6, 5, seed=12, dtype=torch.float64, device="cuda")
    x = logits.clamp(-6, 6).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: _SigmoidFocalLoss.apply(v, labels, 2.0, 0.25), (x,))
    logits, labels = make_inputs(3000, 80, seed=13, device="cuda")
    labels[::2] = -1
    loss, grad = loss_and_grad(sigmoid_focal_loss, logits, labels, 2.0, 0.25)
    assert torch.all(grad[labels < 0] == 0)
    assert torch.equal(loss, loss_and_grad(sigmoid_focal_loss, logits, labels, 2.0, 0.25)[0])


@needs_cuda
def test_cuda_half_and_non_contiguous():
    logits, labels = make_inputs(500, 80, seed=14, device="cuda")
    half = sigmoid_focal_loss(logits.half(), labels, 2.0, 0.25)
    torch.testing.assert_close(half.float(), sigmoid_focal_loss(logits.half().float(), labels, 2.0, 0.25), rtol=1e-2, atol=0)
    logits_t = logits.t().contiguous().t()
    torch.testing.assert_close(
        sigmoid_focal_loss(logits_t, labels, 2.0, 0.25), sigmoid_focal_loss(logits, labels, 2.0, 0.25), rtol=1e-6, atol=1e-6
    )
