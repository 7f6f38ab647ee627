"""Data loaders from the config: datasets by catalog name, transforms, samplers, batching."""
import bisect
import importlib.util
import logging
import os

import torch.utils.data

from fcos_core.utils.comm import get_world_size

from . import datasets as D
from . import samplers
from .collate_batch import BatchCollator
from .transforms import build_transforms

logger = logging.getLogger(__name__)


def load_dataset_catalog(paths_catalog):
    """The ``DatasetCatalog`` class of the Python file ``paths_catalog`` (cfg.PATHS_CATALOG).

    The package's own catalog is imported normally; another file is loaded from its path, so a
    user can list datasets in a copy of paths_catalog.py without editing the package.
    """
    from fcos_core.config import paths_catalog as default

    if not paths_catalog or os.path.abspath(paths_catalog) == os.path.abspath(default.__file__):
        return default.DatasetCatalog
    spec = importlib.util.spec_from_file_location("fcos_user_paths_catalog", paths_catalog)
    if spec is None or not os.path.isfile(paths_catalog):
        raise FileNotFoundError("PATHS_CATALOG file {} not found".format(paths_catalog))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DatasetCatalog


def build_dataset(dataset_list, transforms, dataset_catalog, is_train=True):
    """Datasets for the names in ``dataset_list``.

    Arguments:
        dataset_list (list/tuple of str): DATASETS.TRAIN or DATASETS.TEST names.
        transforms (callable): (image, target) transform given to each dataset.
        dataset_catalog: a class with ``get(name) -> {"factory": str, "args": dict}``.
        is_train (bool): COCO drops images without boxes and VOC drops difficult objects for
            training only.

    Returns:
        list of datasets: one per name for testing; for training a single dataset (the
        concatenation when there are several names).
    """
    if not isinstance(dataset_list, (list, tuple)):
        raise TypeError("dataset_list should be a list of names, got {!r}".format(dataset_list))
    if not dataset_list:
        raise ValueError("no dataset given: set DATASETS.{}".format("TRAIN" if is_train else "TEST"))
    datasets = []
    for name in dataset_list:
        entry = dataset_catalog.get(name)
        args = dict(entry["args"])
        factory = getattr(D, entry["factory"])
        if issubclass(factory, D.COCODataset):  # COCODataset, ShapesDataset
            args["remove_images_without_annotations"] = is_train
        if entry["factory"] == "PascalVOCDataset":
            args["use_difficult"] = not is_train
        args["transforms"] = transforms
        datasets.append(factory(**args))
    if not is_train:
        return datasets
    return [datasets[0] if len(datasets) == 1 else D.ConcatDataset(datasets)]


def make_data_sampler(dataset, shuffle, distributed, seed=0):
    """Index sampler: this process's share when ``distributed``, else all indices.

    ``shuffle`` (training): a :class:`~.samplers.TrainingSampler` seeded with ``seed``, in one process
    too, whose global order does not depend on the number of processes and whose indices carry
    the seed of each sample's augmentation. Otherwise (testing) the indices in order: a contiguous
    block per process when ``distributed``.
    """
    if shuffle:
        if distributed:
            return samplers.TrainingSampler(dataset, seed=seed)
        return samplers.TrainingSampler(dataset, num_replicas=1, rank=0, seed=seed)
    if distributed:
        return samplers.DistributedSampler(dataset, shuffle=False)
    return torch.utils.data.sampler.SequentialSampler(dataset)


def _quantize(values, bins):
    """Index of the bin of each value (bisect_right over the sorted ``bins``)."""
    bins = sorted(bins)
    return [bisect.bisect_right(bins, v) for v in values]


def _compute_aspect_ratios(dataset):
    """height / width of every image, from ``get_img_info`` (no image is loaded)."""
    ratios = []
    for i in range(len(dataset)):
        info = dataset.get_img_info(i)
        ratios.append(float(info["height"]) / float(info["width"]))
    return ratios


def make_batch_data_sampler(dataset, sampler, aspect_grouping, images_per_batch, num_iters=None, start_iter=0):
    """Batch sampler: grouped by aspect ratio bins ``aspect_grouping`` (list of h/w thresholds; empty =
    no grouping), and iteration-based when ``num_iters`` is given."""
    if aspect_grouping:
        group_ids = _quantize(_compute_aspect_ratios(dataset), aspect_grouping)
        batch_sampler = samplers.GroupedBatchSampler(sampler, group_ids, images_per_batch, drop_uneven=False)
    else:
        batch_sampler = torch.utils.data.sampler.BatchSampler(sampler, images_per_batch, drop_last=False)
    if num_iters is not None:
        batch_sampler = samplers.IterationBasedBatchSampler(batch_sampler, num_iters, start_iter)
    return batch_sampler


def _images_per_process(images_per_batch, key):
    """The per-process batch size: the global ``images_per_batch`` over the world size."""
    world_size = get_world_size()
    if images_per_batch % world_size != 0:
        raise ValueError("{} ({}) must be divisible by the number of processes ({})".format(
            key, images_per_batch, world_size))
    return images_per_batch // world_size


def make_data_loader(cfg, is_train=True, is_distributed=False, start_iter=0):
    """DataLoader(s) from the config.

    Training: ONE loader over DATASETS.TRAIN (concatenated), shuffled, iteration based: it yields
    SOLVER.MAX_ITER - start_iter batches of SOLVER.IMS_PER_BATCH / world size images. The images
    of each iteration and their random augmentation are a function of (SEED, iteration) only: a
    run resumed at ``start_iter`` sees what an uninterrupted one would, and without aspect-ratio
    grouping N processes together see the batches of one process.
    Testing: a LIST of loaders, one per DATASETS.TEST name, in order, TEST.IMS_PER_BATCH / world size
    images per batch, each image once (per process share when distributed).

    Each batch is ``(ImageList, targets tuple of BoxList, indices tuple)`` (see BatchCollator);
    ``loader.dataset`` is the dataset. Images are batched with others of the same orientation when
    DATALOADER.ASPECT_RATIO_GROUPING; DATALOADER.NUM_WORKERS worker processes load them.
    """
    if is_train:
        images_per_gpu = _images_per_process(cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH")
        shuffle, num_iters = True, cfg.SOLVER.MAX_ITER
    else:
        images_per_gpu = _images_per_process(cfg.TEST.IMS_PER_BATCH, "TEST.IMS_PER_BATCH")
        # in order: a process's test share is a contiguous block of the dataset
        shuffle, num_iters, start_iter = False, None, 0
    # two groups: h/w < 1 (landscape) and h/w >= 1 (portrait or square)
    aspect_grouping = [1] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else []
    catalog = load_dataset_catalog(cfg.PATHS_CATALOG)
    dataset_list = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    transforms = build_transforms(cfg, is_train)
    # a dataset that writes itself on first use (the shapes splits) does so under a file lock: the
    # processes of a machine wait for the one that writes it, no barrier needed
    datasets = build_dataset(dataset_list, transforms, catalog, is_train)

    loaders = []
    for dataset in datasets:
        sampler = make_data_sampler(dataset, shuffle, is_distributed, seed=cfg.SEED)
        batch_sampler = make_batch_data_sampler(dataset, sampler, aspect_grouping, images_per_gpu, num_iters,
                                                start_iter)
        loaders.append(torch.utils.data.DataLoader(
            dataset,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            batch_sampler=batch_sampler,
            collate_fn=BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY),
        ))
    return loaders[0] if is_train else loaders
