"""Backbone registry entries and :func:`build_backbone`, the one place that reads the config.

A backbone is ``nn.Sequential(OrderedDict(body=..., fpn=...))`` with an ``out_channels``
attribute (the FPN width), so that its keys read ``backbone.body.*`` / ``backbone.fpn.*``
inside the detector, as in the released checkpoints. It maps an image batch
[N, 3, H, W] to the tuple of FPN maps, finest first.
"""
import re
from collections import OrderedDict

from torch import nn

from fcos_core.modeling import registry
from fcos_core.modeling.make_layers import conv_with_kaiming_uniform, norm_factory

from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from .mobilenet import MobileNetV2
from .resnet import ResNet

# RESNETS.STEM_FUNC / TRANS_FUNC names of the original -> our norm names.
_NORM_OF_FUNC = {
    "StemWithFixedBatchNorm": "FrozenBN",
    "BottleneckWithFixedBatchNorm": "FrozenBN",
    "StemWithGN": "GN",
    "BottleneckWithGN": "GN",
    # New: trainable BatchNorm, for training from scratch where FrozenBN without pretrained
    # statistics would do nothing (the quickstart); MODEL.USE_SYNCBN turns it into SyncBN.
    "StemWithBatchNorm": "BN",
    "BottleneckWithBatchNorm": "BN",
}
_RESNET_NAME = re.compile(r"^(?:R-(\d+)|X-(\d+)-(\d+)x(\d+)d)-")


def _gn_kwargs(cfg):
    g = cfg.MODEL.GROUP_NORM
    return dict(gn_dim_per_gp=g.DIM_PER_GP, gn_num_groups=g.NUM_GROUPS, gn_eps=g.EPSILON)


def _resnet_norm(cfg):
    """Norm factory from RESNETS.STEM_FUNC / TRANS_FUNC, which must agree (FrozenBN with
    RESNETS.FROZEN_BN_EPS)."""
    r = cfg.MODEL.RESNETS
    for func in (r.STEM_FUNC, r.TRANS_FUNC):
        if func not in _NORM_OF_FUNC:
            raise KeyError("unknown STEM_FUNC/TRANS_FUNC '{}' (one of {})"
                           .format(func, sorted(_NORM_OF_FUNC)))
    if _NORM_OF_FUNC[r.STEM_FUNC] != _NORM_OF_FUNC[r.TRANS_FUNC]:
        raise ValueError("STEM_FUNC {} and TRANS_FUNC {} use different norms"
                         .format(r.STEM_FUNC, r.TRANS_FUNC))
    return norm_factory(_NORM_OF_FUNC[r.TRANS_FUNC], frozen_bn_eps=r.FROZEN_BN_EPS, **_gn_kwargs(cfg))


def _resnet_depth(cfg):
    """Depth from CONV_BODY ("R-50-..." or "X-101-32x8d-..."); X names must agree with
    RESNETS.NUM_GROUPS / WIDTH_PER_GROUP, which is where the body reads them from."""
    name = cfg.MODEL.BACKBONE.CONV_BODY
    match = _RESNET_NAME.match(name)
    if match is None:
        raise ValueError("cannot read a ResNet depth from CONV_BODY '{}'".format(name))
    if match.group(1):
        return int(match.group(1))
    groups, width = int(match.group(3)), int(match.group(4))
    r = cfg.MODEL.RESNETS
    if (r.NUM_GROUPS, r.WIDTH_PER_GROUP) != (groups, width):
        raise ValueError("{} needs MODEL.RESNETS.NUM_GROUPS {} and WIDTH_PER_GROUP {}, got {} "
                         "and {}".format(name, groups, width, r.NUM_GROUPS, r.WIDTH_PER_GROUP))
    return int(match.group(2))


def _build_resnet_body(cfg, out_levels):
    """:class:`ResNet` with every argument read from MODEL.RESNETS / MODEL.BACKBONE."""
    r = cfg.MODEL.RESNETS
    depth = _resnet_depth(cfg)
    basic = depth in (18, 34)
    return ResNet(
        depth=depth,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        # basic-block ResNets: res2 has WIDTH_PER_GROUP channels (64 by default) whatever
        # RES2_OUT_CHANNELS says
        res2_out_channels=None if basic else r.RES2_OUT_CHANNELS,
        stride_in_1x1=r.STRIDE_IN_1X1,
        norm=_resnet_norm(cfg),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT,
        stage_with_dcn=tuple(r.STAGE_WITH_DCN),
        with_modulated_dcn=r.WITH_MODULATED_DCN,
        deformable_groups=r.DEFORMABLE_GROUPS,
        res5_dilation=r.RES5_DILATION,
        out_levels=out_levels,
    )


def _with_fpn(cfg, body, top_blocks, first_level):
    """``Sequential(body, fpn)`` with ``out_channels``; FPN convs from MODEL.FPN."""
    out_channels = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    conv_block = conv_with_kaiming_uniform(cfg.MODEL.FPN.USE_GN, cfg.MODEL.FPN.USE_RELU,
                                           **_gn_kwargs(cfg))
    fpn = FPN(body.out_channels, out_channels, conv_block, top_blocks, first_level)
    model = nn.Sequential(OrderedDict([("body", body), ("fpn", fpn)]))
    model.out_channels = out_channels
    return model


@registry.BACKBONES.register("R-18-FPN-RETINANET")
@registry.BACKBONES.register("R-34-FPN-RETINANET")
@registry.BACKBONES.register("R-50-FPN-RETINANET")
@registry.BACKBONES.register("R-101-FPN-RETINANET")
@registry.BACKBONES.register("R-152-FPN-RETINANET")
@registry.BACKBONES.register("X-101-32x8d-FPN-RETINANET")
@registry.BACKBONES.register("X-101-64x4d-FPN-RETINANET")
def build_resnet_fpn_p3p7_backbone(cfg):
    """ResNet/ResNeXt + FPN over C3-C5 + P6/P7: outputs P3-P7 (strides 8 .. 128).

    P6 comes from P5 when MODEL.RETINANET.USE_C5 is False (FCOS, Sec. 3.2), else from C5.
    """
    body = _build_resnet_body(cfg, out_levels=(3, 4, 5))
    out_channels = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    use_c5 = cfg.MODEL.RETINANET.USE_C5
    top = LastLevelP6P7(body.out_channels[-1] if use_c5 else out_channels, out_channels,
                        use_p5=not use_c5)
    return _with_fpn(cfg, body, top, first_level=3)


@registry.BACKBONES.register("R-50-FPN")
@registry.BACKBONES.register("R-101-FPN")
@registry.BACKBONES.register("R-152-FPN")
def build_resnet_fpn_backbone(cfg):
    """ResNet + FPN over C2-C5 + max-pooled P6: outputs P2-P6 (strides 4 .. 64)."""
    body = _build_resnet_body(cfg, out_levels=(2, 3, 4, 5))
    return _with_fpn(cfg, body, LastLevelMaxPool(), first_level=2)


@registry.BACKBONES.register("MNV2-FPN-RETINANET")
def build_mnv2_fpn_backbone(cfg):
    """MobileNetV2 + FPN over C3-C5 + P6/P7 from P5: outputs P3-P7 (strides 8 .. 128).

    Norm is BatchNorm, or SyncBatchNorm with MODEL.USE_SYNCBN. As in the original,
    P6 always comes from P5 here (MODEL.RETINANET.USE_C5 is not read).
    """
    body = MobileNetV2(norm="SyncBN" if cfg.MODEL.USE_SYNCBN else "BN",
                       freeze_at=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT)
    out_channels = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    return _with_fpn(cfg, body, LastLevelP6P7(out_channels, out_channels), first_level=3)


def build_backbone(cfg):
    """Build the backbone named by ``cfg.MODEL.BACKBONE.CONV_BODY`` (see ``BACKBONES``)."""
    name = cfg.MODEL.BACKBONE.CONV_BODY
    if name not in registry.BACKBONES:
        raise KeyError("MODEL.BACKBONE.CONV_BODY '{}' is not registered; known: {}"
                       .format(name, sorted(registry.BACKBONES)))
    return registry.BACKBONES[name](cfg)
