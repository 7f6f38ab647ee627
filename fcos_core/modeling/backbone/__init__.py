"""Backbones: ResNet/ResNeXt and MobileNetV2 bodies with an FPN, built by name."""
from .backbone import build_backbone
from fcos_core.utils.imagenet_weights import torchvision_mobilenet_v2_to_body, torchvision_resnet_to_body

__all__ = ["build_backbone", "torchvision_resnet_to_body", "torchvision_mobilenet_v2_to_body"]
