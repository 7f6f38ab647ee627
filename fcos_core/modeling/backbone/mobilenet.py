"""MobileNetV2 body (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018), in the layout of the released FCOS MNV2 models.

``features.0`` is the stem (``0`` conv 3x3/2, ``1`` norm, ReLU6); ``features.1`` ..
``features.17`` are inverted residual blocks with a ``conv`` Sequential (expand 1x1 at
``conv.0/1``, depthwise 3x3 at ``conv.3/4``, linear 1x1 at ``conv.6/7``; without the
expansion the depthwise conv is ``conv.0/1`` and the projection ``conv.3/4``). The final
1x1 conv to 1280 channels and the classifier are not part of the body.
"""
from typing import Sequence

from torch import nn

from fcos_core.modeling.make_layers import norm_factory

# t (expansion), c (output channels), n (blocks), s (stride of the first block)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_norm(in_channels, out_channels, kernel_size, stride, groups, norm_layer, relu6):
    """[conv (no bias, "same" padding), norm(, ReLU6)] as a list of modules."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                        (kernel_size - 1) // 2, groups=groups, bias=False),
              norm_layer(out_channels)]
    if relu6:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class InvertedResidual(nn.Module):
    """Expand 1x1 (if ``expand_ratio`` != 1) -> depthwise 3x3 -> linear 1x1, plus identity
    when ``stride`` is 1 and the channels match.

    [N, in_channels, H, W] -> [N, out_channels, ceil(H/stride), ceil(W/stride)].
    """

    def __init__(self, in_channels, out_channels, stride, expand_ratio,
                 norm_layer=nn.BatchNorm2d):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("stride must be 1 or 2, got {}".format(stride))
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = []
        if expand_ratio != 1:
            layers += _conv_norm(in_channels, hidden, 1, 1, 1, norm_layer, relu6=True)
        layers += _conv_norm(hidden, hidden, 3, stride, hidden, norm_layer, relu6=True)
        layers += _conv_norm(hidden, out_channels, 1, 1, 1, norm_layer, relu6=False)
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 body returning the outputs of ``features[i]`` for i in ``out_indices``.

    Input [N, 3, H, W]. The default (6, 13, 17) gives C3 (32 channels, stride 8), C4 (96,
    stride 16) and C5 (320, stride 32), the maps the FCOS MNV2 models feed to the FPN;
    ``out_channels`` and ``out_strides`` list them. ``forward`` returns a list.

    Args:
        width_mult: channel multiplier of the paper (1.0 for the released models).
        norm: "BN" (released models), "SyncBN", "FrozenBN", "GN" or a callable.
        freeze_at: ``features[0 .. freeze_at-1]`` get ``requires_grad=False`` (0: none).
        out_indices: increasing indices into ``features`` (0 .. 17).
    """

    def __init__(self, width_mult=1.0, norm="BN", freeze_at=0,
                 out_indices: Sequence[int] = (6, 13, 17)):
        super().__init__()
        norm_layer = norm_factory(norm)
        in_channels = int(32 * width_mult)
        self.features = nn.ModuleList(
            [nn.Sequential(*_conv_norm(3, in_channels, 3, 2, 1, norm_layer, relu6=True))])
        channels, strides, stride = [in_channels], [2], 2
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = int(c * width_mult)
            for i in range(n):
                block_stride = s if i == 0 else 1
                self.features.append(InvertedResidual(in_channels, out_channels, block_stride,
                                                      t, norm_layer))
                in_channels, stride = out_channels, stride * block_stride
                channels.append(out_channels)
                strides.append(stride)
        if list(out_indices) != sorted(set(out_indices)) or out_indices[-1] >= len(channels):
            raise ValueError("bad out_indices {}".format(out_indices))
        self.out_indices = tuple(out_indices)
        self.out_channels = [channels[i] for i in self.out_indices]
        self.out_strides = [strides[i] for i in self.out_indices]
        self._initialize_weights()
        self._freeze(freeze_at)

    def _initialize_weights(self):
        """Convs N(0, sqrt(2 / (k*k*out_channels))), norms weight 1 / bias 0 (the original)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _freeze(self, freeze_at):
        for index in range(min(max(freeze_at, 0), len(self.features))):
            for p in self.features[index].parameters():
                p.requires_grad_(False)

    def forward(self, x):
        """[N, 3, H, W] -> list of [N, out_channels[i], H / out_strides[i], ...]."""
        outputs = []
        for index, module in enumerate(self.features[:self.out_indices[-1] + 1]):
            x = module(x)
            if index in self.out_indices:
                outputs.append(x)
        return outputs
