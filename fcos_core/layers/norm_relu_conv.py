"""GroupNorm -> ReLU -> convolution(s) that keeps only the norm's input for the backward pass.

The FCOS head's towers are ``conv -> GroupNorm -> ReLU`` four times (paper Fig. 2, MODEL.FCOS.NUM_CONVS),
run on every FPN level at 256 channels. Plain autograd keeps two full-size tensors per layer for the
backward pass: the norm's input (for GroupNorm's backward) and the ReLU's output (for ReLU's backward
and the next convolution's weight gradient). The ReLU output is cheap to recompute from the norm's
input, so :func:`norm_relu_conv` keeps the norm's input alone and recomputes
``relu(group_norm(x))`` in the backward pass: half the towers' saved activations (at 800 x 1333,
batch 2, ~45 MB per tensor over the five levels, 8 tensors fewer) for one extra GroupNorm and ReLU
forward per layer. The convolutions are not recomputed: their gradients come from
``aten::convolution_backward`` on the recomputed input. Results equal the plain layers' up to
float rounding (the summation order of the input gradient of several convolutions).
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _autocast_dtype(device_type):
    """The autocast dtype active for ``device_type``, or None."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _norm_relu(x, num_groups, weight, bias, eps, amp_dtype):
    """relu(group_norm(x)): in x's dtype, or under autocast normalised in float32 and returned in
    ``amp_dtype`` (what autocast's float32 group_norm on CUDA and fcos_core.layers.GroupNorm on a
    CPU give, followed by the convolution's cast)."""
    if amp_dtype is None:
        return F.relu(F.group_norm(x, num_groups, weight, bias, eps))
    y = F.group_norm(x.float(), num_groups, weight.float(), bias.float(), eps)
    return F.relu(y).to(amp_dtype)


class _NormReLUConvs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, num_groups, eps, amp_dtype, conv_args, *params):
        # params: weight_0, bias_0, weight_1, bias_1, ... (a bias may be None)
        with torch.autocast(x.device.type, enabled=False):
            a = _norm_relu(x, num_groups, norm_weight, norm_bias, eps, amp_dtype)
            outs = []
            for k, (stride, padding, dilation, groups) in enumerate(conv_args):
                w, b = params[2 * k], params[2 * k + 1]
                if amp_dtype is not None:
                    w = w.to(amp_dtype)
                    b = b.to(amp_dtype) if b is not None else None
                outs.append(F.conv2d(a, w, b, stride, padding, dilation, groups))
        ctx.save_for_backward(x, norm_weight, norm_bias, *params)
        ctx.num_groups, ctx.eps, ctx.amp_dtype, ctx.conv_args = num_groups, eps, amp_dtype, conv_args
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grad_outs):
        x, norm_weight, norm_bias, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad
        amp_dtype = ctx.amp_dtype
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            leaves = [t.detach().requires_grad_(need) for t, need in zip((x, norm_weight, norm_bias), needs[:3])]
            a = _norm_relu(leaves[0], ctx.num_groups, leaves[1], leaves[2], ctx.eps, amp_dtype)
        grad_a = None
        grad_params: List = []
        base = 7  # position of params[0] among forward's inputs
        for k, (stride, padding, dilation, groups) in enumerate(ctx.conv_args):
            w, b = params[2 * k], params[2 * k + 1]
            g = grad_outs[k]
            need_w, need_b = needs[base + 2 * k], b is not None and needs[base + 2 * k + 1]
            if g is None:
                grad_params += [None, None]
                continue
            w_run = w.to(amp_dtype) if amp_dtype is not None else w
            gi, gw, gb = torch.ops.aten.convolution_backward(
                g.to(a.dtype), a.detach(), w_run, [w.shape[0]] if b is not None else None,
                list(stride), list(padding), list(dilation), False, [0, 0], groups,
                [True, bool(need_w), bool(need_b)],
            )
            grad_a = gi if grad_a is None else grad_a + gi
            grad_params += [gw.to(w.dtype) if need_w else None, gb.to(b.dtype) if need_b else None]
        grads_in = [None, None, None]
        wanted = [(i, t) for i, t in enumerate(leaves) if t.requires_grad]
        if grad_a is not None and wanted:
            got = torch.autograd.grad(a, [t for _, t in wanted], grad_a)
            for (i, _), g in zip(wanted, got):
                grads_in[i] = g
        return (*grads_in, None, None, None, None, *grad_params)


def norm_relu_conv(x, norm: nn.GroupNorm, convs: Sequence[nn.Conv2d]):
    """``[conv(relu(norm(x))) for conv in convs]``, keeping only ``x`` (and the parameters) for the
    backward pass, which recomputes ``relu(norm(x))`` (see the module docstring).

    Args:
        x: Tensor[N, C, H, W], the norm's input (the previous convolution's output).
        norm: an ``nn.GroupNorm`` (or fcos_core.layers.GroupNorm) over C channels, with affine
            parameters.
        convs: plain ``nn.Conv2d`` layers on C input channels with zero padding.

    Returns a list of Tensor[N, C_out_k, H_k, W_k], one per conv. Under autocast the norm runs in
    float32 and the convolutions in the autocast dtype, as the plain layers would. Without
    gradients to compute it just runs the plain layers.
    """
    for conv in convs:
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros":
            raise TypeError("norm_relu_conv takes plain zero-padded nn.Conv2d layers, got {}".format(conv))
    if not isinstance(norm, nn.GroupNorm) or norm.weight is None:
        raise TypeError("norm_relu_conv takes an affine nn.GroupNorm, got {}".format(norm))
    params = [p for conv in convs for p in (conv.weight, conv.bias)]
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in [x, norm.weight, norm.bias] + params):
        a = F.relu(norm(x))
        return [conv(a) for conv in convs]
    conv_args = tuple((conv.stride, conv.padding, conv.dilation, conv.groups) for conv in convs)
    amp_dtype = _autocast_dtype(x.device.type)
    return list(_NormReLUConvs.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps, amp_dtype, conv_args, *params))
