"""Data structures: boxes of an image (BoxList) and padded image batches (ImageList)."""
from .bounding_box import BoxList
from .image_list import ImageList, to_image_list

__all__ = ["BoxList", "ImageList", "to_image_list"]
