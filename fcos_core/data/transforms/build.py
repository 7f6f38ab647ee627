"""The training / testing transform pipelines from the config (INPUT.*)."""
from . import transforms as T


def _train_min_size(min_size_train, min_size_range_train):
    """Short-side choices for training: MIN_SIZE_TRAIN, or every integer of MIN_SIZE_RANGE_TRAIN."""
    low, high = min_size_range_train
    if (low, high) == (-1, -1):
        return min_size_train
    if not 0 < low <= high:
        raise ValueError("INPUT.MIN_SIZE_RANGE_TRAIN must be (-1, -1) or (low, high) with 0 < low <= high, "
                         "got {}".format(tuple(min_size_range_train)))
    # drawn uniformly among the integers low..high, as the original does
    return tuple(range(low, high + 1))


def build_transforms(cfg, is_train=True):
    """Compose of the input pipeline.

    Training: [ColorJitter if any of INPUT.BRIGHTNESS/CONTRAST/SATURATION/HUE > 0], Resize
    (MIN_SIZE_TRAIN or MIN_SIZE_RANGE_TRAIN, MAX_SIZE_TRAIN), RandomHorizontalFlip
    (HORIZONTAL_FLIP_PROB_TRAIN, if > 0), ToTensor, Normalize. Testing: Resize (MIN_SIZE_TEST,
    MAX_SIZE_TEST), ToTensor, Normalize. Normalize gives BGR 0-255 minus PIXEL_MEAN divided by
    PIXEL_STD with TO_BGR255 (default), else RGB 0-1.
    """
    ops = []
    if is_train:
        jitter = (cfg.INPUT.BRIGHTNESS, cfg.INPUT.CONTRAST, cfg.INPUT.SATURATION, cfg.INPUT.HUE)
        if any(v > 0 for v in jitter):
            ops.append(T.ColorJitter(*jitter))
        min_size = _train_min_size(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_RANGE_TRAIN)
        ops.append(T.Resize(min_size, cfg.INPUT.MAX_SIZE_TRAIN))
        if cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN > 0:
            ops.append(T.RandomHorizontalFlip(cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN))
    else:
        ops.append(T.Resize(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
    ops.append(T.ToTensor())
    ops.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD, to_bgr255=cfg.INPUT.TO_BGR255))
    return T.Compose(ops)
