"""Input pipeline: datasets, transforms, samplers and make_data_loader."""
from .build import make_data_loader
from .datasets import data_skip_counts

__all__ = ["make_data_loader", "data_skip_counts"]
