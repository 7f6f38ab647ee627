"""Small layer factories shared by the backbones and heads.

Everything here takes explicit arguments; nothing reads the global config (the
``build_*`` functions turn the config into these arguments).
"""
from functools import partial
from typing import Callable, Union

from torch import nn

from fcos_core.layers.batch_norm import FrozenBatchNorm2d
from fcos_core.layers.group_norm import GroupNorm

NormFactory = Callable[[int], nn.Module]

# Defaults of MODEL.GROUP_NORM in the original config.
GN_DIM_PER_GP = -1
GN_NUM_GROUPS = 32
GN_EPSILON = 1e-5


def get_group_gn(dim, dim_per_gp=GN_DIM_PER_GP, num_groups=GN_NUM_GROUPS):
    """Number of GroupNorm groups for ``dim`` channels.

    Exactly one of ``dim_per_gp`` (channels per group) and ``num_groups`` must be positive
    (the other is -1), as in MODEL.GROUP_NORM.
    """
    if (dim_per_gp > 0) == (num_groups > 0):
        raise ValueError("GroupNorm: give exactly one of dim_per_gp ({}) and num_groups ({})"
                         .format(dim_per_gp, num_groups))
    if dim_per_gp > 0:
        if dim % dim_per_gp:
            raise ValueError("dim {} is not divisible by dim_per_gp {}".format(dim, dim_per_gp))
        return dim // dim_per_gp
    if dim % num_groups:
        raise ValueError("dim {} is not divisible by num_groups {}".format(dim, num_groups))
    return num_groups


def group_norm(out_channels, dim_per_gp=GN_DIM_PER_GP, num_groups=GN_NUM_GROUPS,
               eps=GN_EPSILON, affine=True, divisor=1):
    """``nn.GroupNorm`` over ``out_channels // divisor`` channels (Wu & He, ECCV 2018).

    ``dim_per_gp`` and ``num_groups`` are divided by ``divisor`` too (the original's
    convention); see :func:`get_group_gn` for which of them applies.
    """
    out_channels = out_channels // divisor
    dim_per_gp = dim_per_gp // divisor if dim_per_gp > 0 else dim_per_gp
    num_groups = num_groups // divisor if num_groups > 0 else num_groups
    groups = get_group_gn(out_channels, dim_per_gp, num_groups)
    return GroupNorm(groups, out_channels, eps, affine)


def norm_factory(norm: Union[str, NormFactory], gn_dim_per_gp=GN_DIM_PER_GP,
                 gn_num_groups=GN_NUM_GROUPS, gn_eps=GN_EPSILON, frozen_bn_eps=0.0) -> NormFactory:
    """Turn a normalisation name into a function ``channels -> nn.Module``.

    Args:
        norm: "FrozenBN" (:class:`fcos_core.layers.FrozenBatchNorm2d`, affine with fixed
            statistics, epsilon ``frozen_bn_eps``: 0 = none, as the original), "BN" (``nn.BatchNorm2d``), "SyncBN"
            (``nn.SyncBatchNorm``, the same state-dict keys as "BN"), "GN"
            (:func:`group_norm` with the ``gn_*`` arguments), or already a callable, which
            is returned unchanged.
    """
    if callable(norm):
        return norm
    if norm == "FrozenBN":
        return FrozenBatchNorm2d if not frozen_bn_eps else partial(FrozenBatchNorm2d, eps=frozen_bn_eps)
    if norm == "BN":
        return nn.BatchNorm2d
    if norm == "SyncBN":
        return nn.SyncBatchNorm
    if norm == "GN":
        return lambda channels: group_norm(channels, gn_dim_per_gp, gn_num_groups, gn_eps)
    raise ValueError("unknown norm '{}' (FrozenBN, BN, SyncBN or GN)".format(norm))


def conv_with_kaiming_uniform(use_gn=False, use_relu=False, gn_dim_per_gp=GN_DIM_PER_GP,
                              gn_num_groups=GN_NUM_GROUPS, gn_eps=GN_EPSILON):
    """Return ``make_conv(in_channels, out_channels, kernel_size, stride=1, dilation=1)``.

    ``make_conv`` builds a "same"-padded conv (padding ``dilation * (kernel_size - 1) // 2``)
    whose weight is ``kaiming_uniform_(a=1)`` (Caffe2's XavierFill) and bias 0; with
    ``use_gn`` the conv has no bias and is followed by GroupNorm, with ``use_relu`` by a
    ReLU, and the result is an ``nn.Sequential`` (keys ``<name>.0.weight``, ``<name>.1.*``);
    otherwise it is the bare ``nn.Conv2d`` (keys ``<name>.weight``, ``<name>.bias``).
    Used for the FPN convs (Lin et al., CVPR 2017).
    """

    def make_conv(in_channels, out_channels, kernel_size, stride=1, dilation=1):
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                         padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                         bias=not use_gn)
        nn.init.kaiming_uniform_(conv.weight, a=1)
        if not use_gn:
            nn.init.constant_(conv.bias, 0)
        modules = [conv]
        if use_gn:
            modules.append(group_norm(out_channels, gn_dim_per_gp, gn_num_groups, gn_eps))
        if use_relu:
            modules.append(nn.ReLU(inplace=True))
        return nn.Sequential(*modules) if len(modules) > 1 else conv

    return make_conv
