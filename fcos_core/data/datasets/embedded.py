"""The embedded shapes dataset as a dataset class: written on first use, then read as COCO json.

The catalog (``fcos_core.config.paths_catalog``) only names a split's folder, image count and seed;
this factory writes the split there when it is missing or was made with other settings
(:func:`~fcos_core.data.datasets.shapes.ensure_shapes_dataset`), under a file lock so that every
process of a machine (the ranks of ``torchrun``, the tests run side by side) waits for the one that
writes it instead of writing it again, and then reads it as a :class:`COCODataset`.
"""
import contextlib
import logging
import os

from .coco import COCODataset
from .shapes import ensure_shapes_dataset
from .shapes_variant import ensure_variant_dataset

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock (one process writes the split)
    fcntl = None

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; other processes
    asking for the same lock wait. A no-op where ``fcntl`` is missing (Windows)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def prepare_shapes_split(out_dir, num_images, seed, ensure=ensure_shapes_dataset):
    """(img_dir, ann_file) of the shapes split in ``out_dir``, written first (once, under the lock
    ``<out_dir>.lock``) when it is missing or holds another count, seed or generator version.
    ``ensure`` (out_dir, num_images, seed) -> (img_dir, ann_file) writes it: the first renderer's
    :func:`ensure_shapes_dataset` or the second's :func:`ensure_variant_dataset`."""
    with file_lock(os.path.abspath(out_dir) + ".lock"):
        return ensure(out_dir, num_images, seed)


class ShapesDataset(COCODataset):
    """A split of the embedded shapes dataset (``shapes_train`` / ``shapes_val``), first renderer.

    Arguments:
        out_dir (str): the split's folder (``<data root>/shapes/<split>``).
        num_images (int), seed (int): what the split is generated with.
        remove_images_without_annotations, transforms: as :class:`COCODataset`.
    """

    def __init__(self, out_dir, num_images, seed, remove_images_without_annotations, transforms=None):
        img_dir, ann_file = prepare_shapes_split(out_dir, num_images, seed)
        super().__init__(ann_file, img_dir, remove_images_without_annotations, transforms)


class ShapesVariantDataset(COCODataset):
    """A split of the shapes drawn by the second renderer (``shapes_val_variant``), for measuring
    generalisation: same classes and ids as :class:`ShapesDataset`, other pixels
    (:mod:`~fcos_core.data.datasets.shapes_variant`). Arguments as :class:`ShapesDataset`."""

    def __init__(self, out_dir, num_images, seed, remove_images_without_annotations, transforms=None):
        if remove_images_without_annotations:  # what the data loader asks of training sets
            logger.warning("%s: the second renderer's shapes are for evaluation only; training on them "
                           "spoils the generalisation they measure", out_dir)
        img_dir, ann_file = prepare_shapes_split(out_dir, num_images, seed, ensure=ensure_variant_dataset)
        super().__init__(ann_file, img_dir, remove_images_without_annotations, transforms)
