"""(image, target) transforms and the config-driven pipeline (build_transforms)."""
from .build import build_transforms
from .transforms import ColorJitter, Compose, Normalize, RandomHorizontalFlip, Resize, ToTensor

__all__ = ["build_transforms", "ColorJitter", "Compose", "Normalize", "RandomHorizontalFlip", "Resize", "ToTensor"]
