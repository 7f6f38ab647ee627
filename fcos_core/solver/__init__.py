from .build import make_lr_scheduler, make_optimizer  # noqa: F401
from .lr_scheduler import WarmupCosineLR, WarmupMultiStepLR  # noqa: F401
