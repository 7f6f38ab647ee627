"""Datasets: COCO json, Pascal VOC xml, concatenation, image lists, and the embedded shapes generator."""
from .coco import COCODataset, data_skip_counts
from .concat_dataset import ConcatDataset
from .embedded import ShapesDataset, ShapesVariantDataset
from .list_dataset import ListDataset
from .voc import PascalVOCDataset

__all__ = ["COCODataset", "ConcatDataset", "ListDataset", "PascalVOCDataset", "ShapesDataset", "ShapesVariantDataset",
           "data_skip_counts"]
