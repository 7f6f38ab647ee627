"""The dense head that follows the backbone. FCOS is the only one this codebase builds."""
from .fcos.fcos import build_fcos


def build_rpn(cfg, in_channels):
    """The FCOS module when MODEL.FCOS_ON (the default); the original's RPN/RetinaNet are not built."""
    if not cfg.MODEL.FCOS_ON:
        raise ValueError(
            "MODEL.FCOS_ON is False, but this codebase only builds FCOS (RPN and RetinaNet heads are not part of it)"
        )
    return build_fcos(cfg, in_channels)
