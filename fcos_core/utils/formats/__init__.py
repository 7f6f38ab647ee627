"""Checkpoints of other libraries (torchvision, mmdetection) and the original FCOS, under our key names."""
from .report import ConversionReport, config_mismatches  # noqa: F401
