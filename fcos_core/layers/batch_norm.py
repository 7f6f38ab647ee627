"""FrozenBatchNorm2d: BatchNorm2d with fixed statistics and affine parameters (all buffers).

Used in the ResNet backbones of maskrcnn-benchmark / FCOS (configs with MODEL.RESNETS.*, e.g.
``FCOS_R_50_FPN_1x``): ImageNet MSRA weights are loaded and their batch norm is never updated.
As the original it has NO epsilon by default: scale = weight / sqrt(running_var); ``eps`` adds
one (torchvision's FrozenBatchNorm2d uses 1e-5; MODEL.RESNETS.FROZEN_BN_EPS). State-dict keys
``weight``, ``bias``, ``running_mean``, ``running_var`` (see spec/R_50_FPN.keys.tsv).

:func:`fuse_conv_bn` folds such a norm (or an eval-mode ``nn.BatchNorm2d``) into the convolution
before it, for inference only (see :mod:`fcos_core.modeling.fuse`).
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """y = (x - running_mean) * weight / sqrt(running_var + eps) + bias, per channel.

    Args:
        n: channels.
        eps: added to the variance; 0.0 (the default, the original's) adds nothing at all, so the
            scale is bitwise ``weight * rsqrt(running_var)``; torchvision's weights need 1e-5.

    Input x: Tensor[B, n, H, W], any floating dtype and memory format; the output has x's dtype
    (the per-channel scale and bias are folded in the buffers' float32 and then cast).
    """

    def __init__(self, n, eps=0.0):
        super(FrozenBatchNorm2d, self).__init__()
        self.num_features = n
        self.eps = float(eps)
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def scale_and_shift(self):
        """The affine map this layer applies, ``y = x * scale + shift``: two float Tensors [n]."""
        var = self.running_var + self.eps if self.eps else self.running_var
        scale = self.weight * var.rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x):
        scale, bias = self.scale_and_shift()
        scale = scale.reshape(1, -1, 1, 1).to(x.dtype)
        bias = bias.reshape(1, -1, 1, 1).to(x.dtype)
        return x.mul(scale).add_(bias)  # one output tensor instead of two

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # state dicts of torch.nn.BatchNorm2d (e.g. torchvision ResNets) carry a counter we do not keep
        state_dict.pop(prefix + "num_batches_tracked", None)
        super(FrozenBatchNorm2d, self)._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def __repr__(self):
        eps = ", eps={}".format(self.eps) if self.eps else ""
        return "{}({}{})".format(self.__class__.__name__, self.num_features, eps)


def conv_then_norm(x, conv, norm):
    """``norm(conv(x))``, as one convolution when ``norm`` is a :class:`FrozenBatchNorm2d`.

    A frozen norm is the affine map ``y * s + t`` per output channel, so ``norm(conv(x))`` equals
    ``conv2d(x, W * s, b * s + t)`` (``b = 0`` without a conv bias). The folded weight is computed
    at every call from the live ``conv.weight``, so gradients reach it as before (``dL/dW = s *
    dL/dW'``) and the checkpoint keeps its layers and keys; unlike :func:`fuse_conv_bn` this is
    for training too. It saves the norm's pass over the activation, forward and backward (a
    multiply over every backbone activation was 4.6% of a ResNet-50 FCOS training step on a CPU).
    Equal to the unfolded pair up to float rounding.

    Args:
        x: Tensor[N, C_in, H, W].
        conv: the convolution; anything other than a plain ``nn.Conv2d`` with zero padding (a
            deformable conv, say) runs unfolded.
        norm: the norm after it; anything other than :class:`FrozenBatchNorm2d` (a trainable
            BatchNorm, or ``nn.Identity`` in a model already folded for inference) runs unfolded.

    Returns Tensor[N, C_out, H', W'].
    """
    if not (isinstance(norm, FrozenBatchNorm2d) and type(conv) is nn.Conv2d and conv.padding_mode == "zeros"):
        return norm(conv(x))
    scale, shift = norm.scale_and_shift()
    weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return F.conv2d(x, weight, bias.to(weight.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)


def batch_norm_scale_and_shift(bn, dtype=torch.float64):
    """Per-channel ``(scale, shift)`` [n] with ``bn(x) == x * scale + shift`` at inference.

    ``bn``: :class:`FrozenBatchNorm2d` (its ``eps``, 0 by default) or an ``nn.BatchNorm2d`` /
    ``nn.SyncBatchNorm`` with running statistics (``weight / sqrt(running_var + eps)``; missing
    affine parameters count as 1 and 0). Computed in ``dtype`` (float64: the fold then adds no
    rounding of its own beyond the final cast).
    """
    if isinstance(bn, FrozenBatchNorm2d):
        var, eps = bn.running_var.to(dtype), bn.eps
    elif isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_var is not None:
        var, eps = bn.running_var.to(dtype), bn.eps
    else:
        raise TypeError("cannot fold {} (FrozenBatchNorm2d or BatchNorm with running stats)".format(bn))
    n = var.shape[0]
    weight = bn.weight.detach().to(dtype) if bn.weight is not None else var.new_ones(n)
    bias = bn.bias.detach().to(dtype) if bn.bias is not None else var.new_zeros(n)
    scale = weight * (var + eps).rsqrt()
    return scale, bias - bn.running_mean.to(dtype) * scale


def fuse_conv_bn(conv, bn):
    """A new ``nn.Conv2d`` equal to ``bn(conv(x))`` at inference; ``conv`` and ``bn`` are unchanged.

    Folding (as in Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018, Sec. 3.2): with ``bn(y) = y * s + t``,
    ``W' = W * s`` (per output channel) and ``b' = b * s + t`` (``b = 0`` for a conv without
    bias). The new conv always has a bias, keeps ``conv``'s dtype, device, memory format and
    ``requires_grad``; its weights are computed in float64 and rounded once.

    Args:
        conv: ``nn.Conv2d`` [C_out, C_in / groups, kH, kW] (exactly that class: a subclass may
            compute something else).
        bn: a norm over C_out channels accepted by :func:`batch_norm_scale_and_shift`; an
            ``nn.BatchNorm2d`` must be in eval mode (in training it uses batch statistics).
    """
    if type(conv) is not nn.Conv2d:
        raise TypeError("fuse_conv_bn needs an nn.Conv2d, got {}".format(type(conv).__name__))
    scale, shift = batch_norm_scale_and_shift(bn)
    if bn.training and not isinstance(bn, FrozenBatchNorm2d):
        raise ValueError("{} is in training mode: it normalises with batch statistics, which cannot be "
                         "folded; call .eval() first".format(bn))
    if scale.shape[0] != conv.out_channels:
        raise ValueError("{} channels in the norm for a conv of {}".format(scale.shape[0], conv.out_channels))
    weight = conv.weight.detach()
    bias = conv.bias.detach().double() if conv.bias is not None else scale.new_zeros(conv.out_channels)
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        # copy_ keeps the weight's memory format (channels_last stays channels_last)
        fused.weight.copy_(weight.double() * scale.to(weight.device).reshape(-1, 1, 1, 1))
        new_bias = (bias.to(weight.device) * scale.to(weight.device) + shift.to(weight.device)).to(weight.dtype)
    fused.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
    return fused
