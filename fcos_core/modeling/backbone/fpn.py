"""Feature Pyramid Network and its extra top levels.

FPN: Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017.
P6/P7: Lin et al., "Focal Loss for Dense Object Detection" (RetinaNet), ICCV 2017; FCOS
(Tian et al., ICCV 2019, Sec. 3.2) computes them from P5 instead of C5.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcos_core.modeling.make_layers import conv_with_kaiming_uniform


class FPN(nn.Module):
    """Top-down pathway with lateral connections over consecutive levels C_l .. C_L.

    For each input a 1x1 lateral conv ``fpn_inner{k}`` and a 3x3 output conv
    ``fpn_layer{k}`` with ``k = level - 1`` (C2 -> 1, C3 -> 2, ..., maskrcnn-benchmark's
    numbering, kept so that released checkpoints load). The coarser merged map is
    upsampled by nearest neighbour to the lateral's exact size, so odd sizes work.

    Args:
        in_channels_list: channels of the inputs, finest level first.
        out_channels: channels of every output.
        conv_block: ``make_conv(in, out, kernel_size, stride=1, dilation=1)``, for example
            :func:`conv_with_kaiming_uniform`; default plain convs, kaiming_uniform(a=1).
        top_blocks: optional ``module(c_last, p_last) -> list[Tensor]`` appended to the
            outputs (:class:`LastLevelP6P7`, :class:`LastLevelMaxPool`).
        first_level: level of the first input (3 for C3).

    ``forward`` takes the list [C_first, ..., C_last] and returns the tuple
    (P_first, ..., P_last, *top_blocks outputs), each [N, out_channels, H_l, W_l] with
    the spatial size of the matching input.
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int, conv_block=None,
                 top_blocks: Optional[nn.Module] = None, first_level: int = 3):
        super().__init__()
        conv_block = conv_block or conv_with_kaiming_uniform()
        self.inner_blocks: List[str] = []
        self.layer_blocks: List[str] = []
        for offset, in_channels in enumerate(in_channels_list):
            k = first_level - 1 + offset
            inner, layer = "fpn_inner{}".format(k), "fpn_layer{}".format(k)
            self.add_module(inner, conv_block(in_channels, out_channels, 1))
            self.add_module(layer, conv_block(out_channels, out_channels, 3, 1))
            self.inner_blocks.append(inner)
            self.layer_blocks.append(layer)
        self.top_blocks = top_blocks

    def forward(self, x: Sequence[Tensor]):
        if len(x) != len(self.inner_blocks):
            raise ValueError("FPN expects {} inputs, got {}".format(len(self.inner_blocks),
                                                                    len(x)))
        last_inner = getattr(self, self.inner_blocks[-1])(x[-1])
        results = [getattr(self, self.layer_blocks[-1])(last_inner)]
        for feature, inner, layer in zip(x[-2::-1], self.inner_blocks[-2::-1],
                                         self.layer_blocks[-2::-1]):
            lateral = getattr(self, inner)(feature)
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, getattr(self, layer)(last_inner))
        if self.top_blocks is not None:
            results.extend(self.top_blocks(x[-1], results[-1]))
        return tuple(results)


class LastLevelP6P7(nn.Module):
    """P6 = ``p6``(x), a 3x3 stride-2 conv, and P7 = ``p7``(ReLU(P6)), the same.

    x is P5 when ``use_p5`` (FCOS, MODEL.RETINANET.USE_C5 False) else C5 (RetinaNet).
    ``use_p5`` None means ``in_channels == out_channels``, the original's rule.
    Weights kaiming_uniform(a=1), biases 0. Shapes: [N, C, H, W] -> [N, out, ceil(H/2),
    ceil(W/2)] and [N, out, ceil(H/4), ceil(W/4)] (strides 64 and 128 over a stride-32 x).
    """

    def __init__(self, in_channels: int, out_channels: int, use_p5: Optional[bool] = None):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for module in (self.p6, self.p7):
            nn.init.kaiming_uniform_(module.weight, a=1)
            nn.init.constant_(module.bias, 0)
        self.use_p5 = in_channels == out_channels if use_p5 is None else use_p5
        if self.use_p5 and in_channels != out_channels:
            raise ValueError("P6 from P5 needs in_channels == out_channels ({} != {})"
                             .format(in_channels, out_channels))

    def forward(self, c5: Tensor, p5: Tensor) -> List[Tensor]:
        p6 = _strided_conv(self.p6, p5 if self.use_p5 else c5)
        p7 = _strided_conv(self.p7, F.relu(p6))
        return [p6, p7]


def _strided_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, in float32 when ``x`` is one pixel wide under CPU bfloat16 autocast.

    Works around a bug seen with torch 2.14.1 (oneDNN) on a CPU with AVX-512 BF16: the bfloat16
    weight gradient of a 3x3 stride-2 convolution whose input is 1 pixel wide is NaN or garbage
    (uninitialised memory is read), which turned every weight into NaN after one step when small
    training images (width <= 64) made P6 one pixel wide. Such maps are tiny, so float32 costs
    nothing. tests/modeling/test_backbone.py checks the gradient.
    """
    if x.device.type == "cpu" and x.shape[-1] == 1 and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return conv(x.float())
    return conv(x)


class LastLevelMaxPool(nn.Module):
    """P6 = 1x1 max-pool with stride 2 on P5 (the FPN paper's extra level for RPN)."""

    def forward(self, c5: Tensor, p5: Tensor) -> List[Tensor]:
        return [F.max_pool2d(p5, 1, 2, 0)]
