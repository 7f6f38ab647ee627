"""Deformable convolution (DCN v1 / modulated DCN v2) through ``torchvision.ops.deform_conv2d``.

Implements the ``DFConv2d`` layer of maskrcnn-benchmark / FCOS, used by the ``*_dcnv2_*`` configs
(MODEL.RESNETS.STAGE_WITH_DCN, MODEL.FCOS.USE_DCN_IN_TOWER): Dai et al., "Deformable Convolutional
Networks" (ICCV 2017) and Zhu et al., "Deformable ConvNets v2" (CVPR 2019).

Parameter names are the original's, so checkpoints trained with the original DCN kernels load:
``<name>.offset.weight``, ``<name>.offset.bias`` (the plain conv predicting offsets and masks) and
``<name>.conv.weight`` (+ ``<name>.conv.bias`` when bias=True). The channel layout of offsets
(for each deformable group and kernel tap: dy, dx) and masks (one per group and tap) is the one of
the original CUDA kernels and of torchvision, so the weights mean the same thing.
"""
import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d


class DeformConv(nn.Module):
    """Deformable convolution whose offsets (and masks) come from the caller.

    Holds ``weight`` [C_out, C_in / groups, kh, kw] and optional ``bias`` [C_out].
    forward(input [B, C_in, H, W], offset [B, 2*dg*kh*kw, H', W'], mask [B, dg*kh*kw, H', W'] or
    None) -> [B, C_out, H', W']; with a mask this is modulated DCN v2 (the original
    ``ModulatedDeformConv``), without it DCN v1 (the original ``DeformConv``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, deformable_groups=1, bias=False):
        super(DeformConv, self).__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels {} and out_channels {} must be divisible by groups {}".format(
                in_channels, out_channels, groups))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Uniform(-1/sqrt(fan), 1/sqrt(fan)) with fan = C_in * kh * kw, bias 0 (as the original)."""
        stdv = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -stdv, stdv)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, input, offset, mask=None):
        return deform_conv2d(input, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)

    def extra_repr(self):
        return "{}, {}, kernel_size={}, stride={}, padding={}, dilation={}, groups={}, " \
               "deformable_groups={}, bias={}".format(
                   self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                   self.dilation, self.groups, self.deformable_groups, self.bias is not None)


class DFConv2d(nn.Module):
    """Deformable conv layer that predicts its own offsets: maskrcnn-benchmark / FCOS ``DFConv2d``.

    ``offset`` (a plain conv with the same kernel, stride, padding and dilation) predicts from the
    input 2*dg*kh*kw offsets, followed with ``with_modulated_dcn`` by dg*kh*kw mask logits that go
    through a sigmoid; ``conv`` (:class:`DeformConv`) samples the input at the shifted taps.

    As the original, the offset conv starts with kaiming_uniform(a=1) weights and zero bias, so
    training starts from the same point. With its weights set to zero the offsets are 0 and the
    masks sigmoid(0) = 0.5: the layer is then a plain convolution with weight ``conv.weight``
    (times 0.5 when modulated, plus ``conv.bias``).

    Arguments follow maskrcnn-benchmark; ``padding`` (the FCOS fork's extra argument) defaults to
    dilation * (kernel_size - 1) // 2. Input [B, in_channels, H, W] -> [B, out_channels, H', W'].
    """

    def __init__(self, in_channels, out_channels, with_modulated_dcn=True, kernel_size=3, stride=1,
                 groups=1, dilation=1, deformable_groups=1, bias=False, padding=None):
        super(DFConv2d, self).__init__()
        kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        if padding is None:
            padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel_size))
        padding = _pair(padding)
        taps = kernel_size[0] * kernel_size[1]
        self.num_offsets = 2 * deformable_groups * taps
        num_masks = deformable_groups * taps if with_modulated_dcn else 0
        self.offset = nn.Conv2d(in_channels, self.num_offsets + num_masks, kernel_size=kernel_size,
                                stride=stride, padding=padding, dilation=dilation, bias=True)
        nn.init.kaiming_uniform_(self.offset.weight, a=1)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                               dilation=dilation, groups=groups, deformable_groups=deformable_groups,
                               bias=bias)
        self.with_modulated_dcn = with_modulated_dcn
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation

    def forward(self, x):
        offset_mask = self.offset(x)
        offset = offset_mask[:, : self.num_offsets]
        mask = offset_mask[:, self.num_offsets:].sigmoid() if self.with_modulated_dcn else None
        return self.conv(x, offset, mask)
