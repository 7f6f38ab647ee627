"""ResNet and ResNeXt bodies in the layout of maskrcnn-benchmark.

ResNet: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
ResNeXt: Xie et al., "Aggregated Residual Transformations for Deep Neural Networks",
CVPR 2017 (grouped 3x3 convs: ``num_groups`` x ``width_per_group`` channels).

Module names match the released FCOS checkpoints: ``stem.conv1``, ``stem.bn1``,
``layer{1..4}.{block}.{downsample.0, downsample.1, conv1, bn1, conv2, bn2[, conv3, bn3]}``.
``layer1`` .. ``layer4`` produce C2 .. C5, the feature of level l having stride 2**l
(Lin et al., FPN, CVPR 2017 naming).
"""
from typing import NamedTuple, Optional, Sequence

import torch.nn.functional as F
from torch import nn

from fcos_core.layers.batch_norm import conv_then_norm
from fcos_core.layers.dcn import DFConv2d
from fcos_core.modeling.make_layers import norm_factory

# depth -> (block type, number of blocks in layer1..layer4)
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class DeformSpec(NamedTuple):
    """How a stage's 3x3 conv is made deformable (Dai et al. 2017; Zhu et al. DCNv2, 2019)."""

    modulated: bool = False
    deformable_groups: int = 1


def _conv3x3(in_channels, out_channels, stride=1, groups=1, dilation=1,
             deform: Optional[DeformSpec] = None):
    """3x3 conv without bias, "same" padding; a ``DFConv2d`` when ``deform`` is given.

    A plain conv gets ``kaiming_uniform_(a=1)``; ``DFConv2d`` keeps its own init.
    """
    if deform is not None:
        return DFConv2d(in_channels, out_channels, with_modulated_dcn=deform.modulated,
                        kernel_size=3, stride=stride, groups=groups, dilation=dilation,
                        deformable_groups=deform.deformable_groups, bias=False)
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation,
                     dilation=dilation, groups=groups, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return conv


def _conv1x1(in_channels, out_channels, stride=1):
    """1x1 conv without bias, ``kaiming_uniform_(a=1)``."""
    conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return conv


def _downsample(in_channels, out_channels, stride, norm_layer):
    """Projection shortcut ``downsample.0`` (1x1 conv) + ``downsample.1`` (norm), or None
    when the identity fits (same channels, stride 1)."""
    if in_channels == out_channels and stride == 1:
        return None
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), norm_layer(out_channels))


def _shortcut(downsample, x):
    """The projection shortcut ``downsample`` (a :func:`_downsample` Sequential, or one whose norm
    became ``nn.Identity`` when folded for inference) applied to ``x``, its norm folded into the
    conv (:func:`conv_then_norm`)."""
    return conv_then_norm(x, downsample[0], downsample[1])


class Stem(nn.Module):
    """``conv1`` 7x7/2 + ``bn1`` + ReLU + 3x3/2 max-pool: [N, 3, H, W] -> [N, C, ~H/4, ~W/4]."""

    def __init__(self, out_channels=64, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(out_channels)
        nn.init.kaiming_uniform_(self.conv1.weight, a=1)

    def forward(self, x):
        x = F.relu_(conv_then_norm(x, self.conv1, self.bn1))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlock(nn.Module):
    """Two 3x3 convs (``conv1`` carries the stride) plus shortcut; ResNet-18/34.

    [N, in_channels, H, W] -> [N, out_channels, ceil(H/stride), ceil(W/stride)].
    With ``deform`` the second 3x3 conv (``conv2``) is deformable.
    """

    def __init__(self, in_channels, out_channels, stride=1, dilation=1,
                 norm_layer=nn.BatchNorm2d, deform: Optional[DeformSpec] = None):
        super().__init__()
        # downsample is created first so that the state dict lists it first, as the
        # original does.
        self.downsample = _downsample(in_channels, out_channels, stride, norm_layer)
        self.conv1 = _conv3x3(in_channels, out_channels, stride, dilation=dilation)
        self.bn1 = norm_layer(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, dilation=dilation, deform=deform)
        self.bn2 = norm_layer(out_channels)

    def forward(self, x):
        identity = x if self.downsample is None else _shortcut(self.downsample, x)
        out = F.relu_(conv_then_norm(x, self.conv1, self.bn1))
        out = conv_then_norm(out, self.conv2, self.bn2)
        out += identity  # in place: saves a full-size allocation per block (profiled)
        return F.relu_(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped, optionally deformable) -> 1x1 residual block; ResNet-50+/ResNeXt.

    [N, in_channels, H, W] -> [N, out_channels, ceil(H/stride), ceil(W/stride)].
    ``stride_in_1x1`` True puts the stride on ``conv1`` (the original MSRA ResNet and the
    released FCOS models), False on ``conv2`` (fb.torch / torchvision / FAIR ResNeXt).
    """

    def __init__(self, in_channels, bottleneck_channels, out_channels, num_groups=1,
                 stride_in_1x1=True, stride=1, dilation=1, norm_layer=nn.BatchNorm2d,
                 deform: Optional[DeformSpec] = None):
        super().__init__()
        self.downsample = _downsample(in_channels, out_channels, stride, norm_layer)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv1x1(in_channels, bottleneck_channels, stride_1x1)
        self.bn1 = norm_layer(bottleneck_channels)
        self.conv2 = _conv3x3(bottleneck_channels, bottleneck_channels, stride_3x3,
                              groups=num_groups, dilation=dilation, deform=deform)
        self.bn2 = norm_layer(bottleneck_channels)
        self.conv3 = _conv1x1(bottleneck_channels, out_channels)
        self.bn3 = norm_layer(out_channels)

    def forward(self, x):
        identity = x if self.downsample is None else _shortcut(self.downsample, x)
        out = F.relu_(conv_then_norm(x, self.conv1, self.bn1))
        out = F.relu_(conv_then_norm(out, self.conv2, self.bn2))
        out = conv_then_norm(out, self.conv3, self.bn3)
        out += identity  # in place: saves a full-size allocation per block (profiled)
        return F.relu_(out)


class ResNet(nn.Module):
    """ResNet / ResNeXt body returning the feature maps C_l for l in ``out_levels``.

    Input [N, 3, H, W]; C_l has stride 2**l (C2: 4 ... C5: 32, or 16 when
    ``res5_dilation`` > 1) and ``out_channels[i]`` channels. ``forward`` returns a list.

    Args:
        depth: 18, 34 (basic blocks), 50, 101, 152 (bottlenecks); see ``RESNET_SPECS``.
        num_groups, width_per_group: ResNeXt cardinality and per-group width; layer1's
            bottleneck has ``num_groups * width_per_group`` channels, doubling per stage.
            Basic blocks need num_groups 1; their layer1 is ``width_per_group`` wide (64).
        stem_out_channels: channels of the stem (64).
        res2_out_channels: channels of C2, doubling per stage; None gives 256 for
            bottlenecks and ``width_per_group`` (64) for basic blocks.
        stride_in_1x1: stride on the bottleneck's 1x1 conv (MSRA) instead of its 3x3.
        norm: "FrozenBN", "BN", "SyncBN", "GN" or a callable ``channels -> nn.Module``.
        freeze_at: parameters of the stem (1) and of layer1 .. layer{freeze_at-1} get
            ``requires_grad=False``; 0 or less freezes nothing. BN statistics are not
            touched (the original's behaviour; FrozenBN has none to update).
        stage_with_dcn: per layer1..layer4, whether its blocks' 3x3 conv is a DFConv2d.
        with_modulated_dcn, deformable_groups: DCNv2 (modulated) or DCNv1, offset groups.
        res5_dilation: dilation of layer4; > 1 also removes its stride.
        out_levels: which of C2..C5 (2..5) to return, in increasing order.
    """

    def __init__(self, depth=50, num_groups=1, width_per_group=64, stem_out_channels=64,
                 res2_out_channels=None, stride_in_1x1=True, norm="FrozenBN", freeze_at=2,
                 stage_with_dcn: Sequence[bool] = (False, False, False, False),
                 with_modulated_dcn=False, deformable_groups=1, res5_dilation=1,
                 out_levels: Sequence[int] = (3, 4, 5)):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError("depth {} not in {}".format(depth, sorted(RESNET_SPECS)))
        block_type, block_counts = RESNET_SPECS[depth]
        if list(out_levels) != sorted(set(out_levels)) or not set(out_levels) <= {2, 3, 4, 5}:
            raise ValueError("out_levels must increase within 2..5, got {}".format(out_levels))
        if len(stage_with_dcn) != 4:
            raise ValueError("stage_with_dcn needs 4 entries, got {}".format(stage_with_dcn))
        norm_layer = norm_factory(norm)
        self.stem = Stem(stem_out_channels, norm_layer)
        make_block = self._block_maker(block_type, num_groups, width_per_group,
                                       stride_in_1x1, norm_layer)
        if res2_out_channels is None:
            # basic blocks: res2 is as wide as one group (64 in ResNet-18/34, as in the paper)
            res2_out_channels = 256 if block_type == "bottleneck" else width_per_group
        in_channels, stride = stem_out_channels, 4
        self.out_levels = tuple(out_levels)
        self.out_channels, self.out_strides = [], []
        for index, count in enumerate(block_counts, 1):
            dilation = res5_dilation if index == 4 else 1
            first_stride = 1 if index == 1 or dilation > 1 else 2
            deform = (DeformSpec(with_modulated_dcn, deformable_groups)
                      if stage_with_dcn[index - 1] else None)
            out_channels = res2_out_channels * 2 ** (index - 1)
            blocks = [make_block(in_channels if i == 0 else out_channels, out_channels,
                                 first_stride if i == 0 else 1, dilation, 2 ** (index - 1),
                                 deform) for i in range(count)]
            self.add_module("layer{}".format(index), nn.Sequential(*blocks))
            in_channels, stride = out_channels, stride * first_stride
            if index + 1 in self.out_levels:
                self.out_channels.append(out_channels)
                self.out_strides.append(stride)
        self._freeze(freeze_at)

    @staticmethod
    def _block_maker(block_type, num_groups, width_per_group, stride_in_1x1, norm_layer):
        """Return ``make(in_ch, out_ch, stride, dilation, width_factor, deform) -> block``."""
        if block_type == "basic":
            if num_groups != 1:
                raise ValueError("basic blocks support only num_groups=1 (width_per_group sets "
                                 "their res2 width), got num_groups={}".format(num_groups))
            return lambda cin, cout, stride, dil, _factor, deform: BasicBlock(
                cin, cout, stride, dil, norm_layer, deform)
        width = num_groups * width_per_group
        return lambda cin, cout, stride, dil, factor, deform: Bottleneck(
            cin, width * factor, cout, num_groups, stride_in_1x1, stride, dil, norm_layer,
            deform)

    def _freeze(self, freeze_at):
        """Set ``requires_grad=False`` on the stem (index 0) and layer1..layer{freeze_at-1}."""
        for index in range(min(max(freeze_at, 0), 5)):
            module = self.stem if index == 0 else getattr(self, "layer{}".format(index))
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        """[N, 3, H, W] -> list of C_l for l in ``out_levels`` ([N, out_channels[i], ...])."""
        outputs = []
        x = self.stem(x)
        for index in range(1, max(self.out_levels)):
            x = getattr(self, "layer{}".format(index))(x)
            if index + 1 in self.out_levels:
                outputs.append(x)
        return outputs
