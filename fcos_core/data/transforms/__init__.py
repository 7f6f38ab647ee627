"""(image, target) transforms and the config-driven pipeline (build_transforms)."""
from .build import build_transforms
from .photometric import PhotoMetricDistortion, RandomGaussianBlur, RandomGaussianNoise, RandomJPEGCompression
from .transforms import ColorJitter, Compose, Normalize, RandomCrop, RandomHorizontalFlip, Resize, ToTensor

__all__ = ["build_transforms", "ColorJitter", "Compose", "Normalize", "PhotoMetricDistortion", "RandomCrop",
           "RandomGaussianBlur", "RandomGaussianNoise", "RandomHorizontalFlip", "RandomJPEGCompression", "Resize",
           "ToTensor"]
