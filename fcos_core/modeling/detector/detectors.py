"""``build_detection_model(cfg)``: the original's entry point to the whole detector."""
from fcos_core.modeling.backbone import build_backbone
from fcos_core.modeling.rpn.rpn import build_rpn

from .generalized_rcnn import GeneralizedRCNN


def _build_generalized_rcnn(cfg):
    backbone = build_backbone(cfg)
    rpn = build_rpn(cfg, backbone.out_channels)
    return GeneralizedRCNN(backbone, rpn, size_divisibility=cfg.DATALOADER.SIZE_DIVISIBILITY)


_DETECTION_META_ARCHITECTURES = {"GeneralizedRCNN": _build_generalized_rcnn}


def build_detection_model(cfg):
    """The detector named by MODEL.META_ARCHITECTURE ("GeneralizedRCNN")."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in _DETECTION_META_ARCHITECTURES:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE {name!r} is not known; choose one of {sorted(_DETECTION_META_ARCHITECTURES)}"
        )
    return _DETECTION_META_ARCHITECTURES[name](cfg)
