"""Layers and ops: compiled kernels with pure-PyTorch references, and the small modules FCOS uses."""
from .batch_norm import FrozenBatchNorm2d  # noqa: F401
from .dcn import DeformConv, DFConv2d  # noqa: F401
from .group_norm import GroupNorm  # noqa: F401
from .iou_loss import IOULoss  # noqa: F401
from .nms import ml_nms, nms  # noqa: F401
from .scale import Scale  # noqa: F401
from .sigmoid_focal_loss import SigmoidFocalLoss, sigmoid_focal_loss  # noqa: F401
