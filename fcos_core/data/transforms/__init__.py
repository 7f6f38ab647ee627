"""(image, target) transforms and the config-driven pipeline (build_transforms)."""
from .build import build_transforms, inference_transforms, make_resize, transform_image
from .photometric import PhotoMetricDistortion, RandomGaussianBlur, RandomGaussianNoise, RandomJPEGCompression
from .transforms import ColorJitter, Compose, Normalize, RandomCrop, RandomHorizontalFlip, Resize, TensorResize, ToTensor

__all__ = ["build_transforms", "inference_transforms", "make_resize", "transform_image", "ColorJitter", "Compose", "Normalize",
           "PhotoMetricDistortion", "RandomCrop", "RandomGaussianBlur", "RandomGaussianNoise", "RandomHorizontalFlip",
           "RandomJPEGCompression", "Resize", "TensorResize", "ToTensor"]
