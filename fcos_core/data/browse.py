"""Look at the ground truth as the model sees it: samples after the transforms, boxes drawn.

As mmdetection's ``tools/misc/browse_dataset.py``: each sample goes through the transform pipeline
of training (or testing), resizing, flipping and colour changes included, and the pixels are turned
back from the network's normalisation into a viewable image, on which the (transformed) boxes are
drawn with their class names by :func:`fcos_core.utils.visualizer.draw_detections`. What the
pictures show is what the loss gets, so a wrong box, flip or colour shows before training does.

``tools/browse_dataset.py`` is argument parsing around :func:`browse_from_config`.
"""
import logging
import math
import os
import re

import cv2
import numpy as np
from tqdm import tqdm

from fcos_core.utils.rng import SeededIndex
from fcos_core.utils.visualizer import draw_detections

from .build import build_dataset, load_dataset_catalog
from .datasets import ConcatDataset
from .transforms import build_transforms

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")


def check_split(split):
    """``split`` if it is "train" or "test"; ValueError naming it otherwise."""
    if split not in SPLITS:
        raise ValueError("split must be one of {}, got {!r}".format(SPLITS, split))
    return split


def datasets_of_split(cfg, split, transforms, keep_all_images=False):
    """One dataset over the names of DATASETS.TRAIN (``split`` "train") or DATASETS.TEST ("test").

    Arguments:
        transforms: the (image, target) transforms the dataset applies (or None: PIL images).
        keep_all_images (bool): build as for testing (COCO keeps images without boxes, VOC keeps
            difficult objects, flagged "difficult") even for "train"; the report counts them.
    Returns:
        a dataset (a :class:`ConcatDataset` when the split names several).
    """
    names = cfg.DATASETS.TRAIN if check_split(split) == "train" else cfg.DATASETS.TEST
    is_train = split == "train" and not keep_all_images
    datasets = build_dataset(names, transforms, load_dataset_catalog(cfg.PATHS_CATALOG), is_train)
    return datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)


def to_bgr_uint8(image, mean, std, to_bgr255):
    """Undo Normalize: a [3, H, W] float tensor from the pipeline -> BGR uint8 array [H, W, 3].

    ``to_bgr255`` True: the tensor is (BGR 0-255 - mean) / std; False: (RGB 0-1 - mean) / std (the
    two conventions of INPUT.TO_BGR255). Values are rounded and clipped to 0-255.
    """
    pixels = image.detach().float().cpu().numpy().transpose(1, 2, 0)  # [H, W, 3]
    pixels = pixels * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    if not to_bgr255:
        pixels = pixels[..., ::-1] * 255.0
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def class_names_of(dataset):
    """``dataset.class_names`` (background first) or None when the dataset has none (ids drawn)."""
    names = getattr(dataset, "class_names", None)
    return list(names) if names else None


def draw_sample(image, target, mean, std, to_bgr255, names=None):
    """The picture of one transformed sample: BGR uint8 [H, W, 3] with its boxes and class names.

    Arguments:
        image: [3, H, W] normalised tensor; target: BoxList (any mode) with a "labels" field.
        names: class names indexed by label, or None (labels written as ids).
    Ground truth has no scores: each label reads as the class name only.
    """
    picture = np.ascontiguousarray(to_bgr_uint8(image, mean, std, to_bgr255))
    boxes = target.convert("xyxy").bbox.numpy()
    labels = target.get_field("labels").tolist()
    return draw_detections(picture, boxes, labels, scores=None, names=names)


def _picture_name(dataset, index, position):
    """``<position>_<file stem>.png`` (the image's file name where the dataset gives one)."""
    info = dataset.get_img_info(index) if hasattr(dataset, "get_img_info") else {}
    stem = os.path.splitext(os.path.basename(str(info.get("file_name", ""))))[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    return "{:04d}{}.png".format(position, "_" + stem if stem else "")


def browse_dataset(dataset, out_dir, num, mean, std, to_bgr255, seed=None, names=None):
    """Write the first ``num`` samples of ``dataset`` (with transforms ending in Normalize) as PNG
    pictures into ``out_dir``, and ``contact_sheet.png`` of them all.

    Arguments:
        seed (int or None): with a seed, sample ``i`` runs its random transforms with the seed
            ``seed + i`` (as the training sampler seeds each sample), so the pictures repeat from
            run to run; None leaves the generators alone.
        names: class names indexed by label (default: the dataset's ``class_names``).
    Returns:
        (list of picture paths, contact sheet path).
    """
    os.makedirs(out_dir, exist_ok=True)
    names = names if names is not None else class_names_of(dataset)
    count = min(int(num), len(dataset))
    paths = []
    for position in tqdm(range(count), desc="browse", disable=None):
        index = position if seed is None else SeededIndex(position, int(seed) + position)
        image, target, sample_index = dataset[index]
        picture = draw_sample(image, target, mean, std, to_bgr255, names)
        path = os.path.join(out_dir, _picture_name(dataset, sample_index, position))
        if not cv2.imwrite(path, picture):
            raise OSError("cannot write picture {}".format(path))
        paths.append(path)
    sheet = contact_sheet(paths, os.path.join(out_dir, "contact_sheet.png")) if paths else None
    return paths, sheet


def contact_sheet(picture_paths, out_path, tile=256, columns=None):
    """One PNG with the pictures as ``tile`` x ``tile`` thumbnails (aspect kept, on white) in a grid
    of ``columns`` (default: about square) with a 4-pixel gap. Returns ``out_path``."""
    paths = list(picture_paths)
    if not paths:
        raise ValueError("no picture for the contact sheet")
    columns = columns or int(math.ceil(math.sqrt(len(paths))))
    rows = int(math.ceil(len(paths) / columns))
    gap = 4
    sheet = np.full((rows * (tile + gap) + gap, columns * (tile + gap) + gap, 3), 255, np.uint8)
    for k, path in enumerate(paths):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError("cannot read picture {}".format(path))
        scale = tile / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        top, left = gap + (k // columns) * (tile + gap), gap + (k % columns) * (tile + gap)
        sheet[top:top + image.shape[0], left:left + image.shape[1]] = image
    if not cv2.imwrite(out_path, sheet):
        raise OSError("cannot write contact sheet {}".format(out_path))
    return out_path


def browse_from_config(cfg, out_dir, num=16, split="train"):
    """Pictures of the first ``num`` samples of DATASETS.TRAIN ("train": training transforms, each
    sample seeded from cfg.SEED) or DATASETS.TEST ("test": test transforms) in ``out_dir``.

    The pipeline is ``build_transforms(cfg, is_train)``; its Normalize (INPUT.PIXEL_MEAN,
    PIXEL_STD, TO_BGR255) is undone for the pictures. Returns (picture paths, contact sheet path).
    """
    is_train = check_split(split) == "train"
    dataset = datasets_of_split(cfg, split, build_transforms(cfg, is_train))
    logger.info("Browsing %d of the %d images of %s (%s transforms) into %s", min(num, len(dataset)), len(dataset),
                ", ".join(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST), split, out_dir)
    return browse_dataset(dataset, out_dir, num, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255,
                          seed=cfg.SEED if is_train else None)
