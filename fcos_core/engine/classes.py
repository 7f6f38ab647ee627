"""The detector's classes: MODEL.FCOS.NUM_CLASSES against the data, and the class names that
tests, demos and exports show.

MODEL.FCOS.NUM_CLASSES counts the background (81 for COCO's 80 classes). ``0`` means "from the
data": training takes it from DATASETS.TRAIN (:func:`resolve_num_classes`); a test, demo or export
from the checkpoint it runs (:func:`resolve_num_classes_for_inference`). Names are lists indexed by
contiguous label, background first (``["__background", name of label 1, ...]``), as the datasets'
``class_names`` and the checkpoints' ``"categories"``.
"""
import json
import logging
import os
import sys

from fcos_core.data.build import build_dataset, load_dataset_catalog
from fcos_core.engine.coco_classes import COCO_CATEGORIES
from fcos_core.utils.checkpoint import CATEGORIES, CLASSIFIER_KEYS, DetectronCheckpointer, atomic_write_text
from fcos_core.utils.comm import get_rank

AUTO = 0  # MODEL.FCOS.NUM_CLASSES value meaning "from the data"
_KEY = "MODEL.FCOS.NUM_CLASSES"


def dataset_class_names(dataset_list, paths_catalog, is_train=True):
    """``class_names`` of the datasets ``dataset_list`` (catalog names), built without transforms
    (no image is read; a COCO json is parsed). For training the datasets are concatenated, which
    checks that they agree; for testing the first one's names are returned.

    Returns:
        list[str] or None: background first; None when the dataset does not name its classes.
    """
    datasets = build_dataset(list(dataset_list), None, load_dataset_catalog(paths_catalog), is_train)
    names = getattr(datasets[0], "class_names", None)
    return list(names) if names else None


def check_num_classes(num_classes, class_names, dataset_names, logger=None):
    """Compare MODEL.FCOS.NUM_CLASSES (background included) with a training set's classes.

    Raises:
        ValueError: too few (labels above ``num_classes - 1`` would be trained as background),
            naming both numbers, the datasets and the key.
    Logs a warning when there are more than needed (outputs that never see a positive example).

    Returns:
        ``class_names`` as a list (None when the dataset does not name its classes).
    """
    logger = logger or logging.getLogger(__name__)
    where = ", ".join(dataset_names)
    if not class_names:
        logger.warning("%s does not name its classes: %s %d is not checked", where, _KEY, num_classes)
        return None
    needed = len(class_names)
    if num_classes < needed:
        raise ValueError(
            f"{_KEY} is {num_classes} ({num_classes - 1} classes + background) but the training set {where} has "
            f"{needed - 1} classes ({_preview(class_names)}): labels above {num_classes - 1} would be trained as "
            f"background. Set {_KEY} {needed}, or {AUTO} to take it from DATASETS.TRAIN.")
    if num_classes > needed:
        logger.warning("%s is %d but the training set %s has %d classes (%d with the background): %d classifier "
                       "outputs will never see an example; set %s %d (or %d: from DATASETS.TRAIN)", _KEY,
                       num_classes, where, needed - 1, needed, num_classes - needed, _KEY, needed, AUTO)
    return list(class_names)


def _preview(names, limit=6):
    shown = ", ".join(names[1:limit + 1])
    return shown + (", ..." if len(names) > limit + 1 else "")


def _with_num_classes(cfg, num_classes):
    """A frozen copy of ``cfg`` with MODEL.FCOS.NUM_CLASSES set."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.FCOS.NUM_CLASSES = int(num_classes)
    cfg.freeze()
    return cfg


def resolve_num_classes(cfg, logger=None):
    """Training, before the model is built: with MODEL.FCOS.NUM_CLASSES 0, a frozen copy of ``cfg``
    with DATASETS.TRAIN's class count (background included); otherwise ``cfg`` itself (checked by
    :func:`check_num_classes` against the training loader's dataset).

    Raises:
        ValueError: a negative count, or 0 with a training set that does not name its classes.
    """
    num_classes = cfg.MODEL.FCOS.NUM_CLASSES
    if num_classes > AUTO:
        return cfg
    if num_classes < AUTO:
        raise ValueError(f"{_KEY} is {num_classes}: give the number of classes + 1 (background), "
                         f"or {AUTO} to take it from DATASETS.TRAIN")
    names = dataset_class_names(cfg.DATASETS.TRAIN, cfg.PATHS_CATALOG, is_train=True)
    if not names:
        raise ValueError(f"{_KEY} is {AUTO} (from the data) but {', '.join(cfg.DATASETS.TRAIN)} does not name its "
                         f"classes: set {_KEY} to the number of classes + 1")
    (logger or logging.getLogger(__name__)).info(
        "%s %d from DATASETS.TRAIN (%d classes + background: %s)", _KEY, len(names), len(names) - 1, _preview(names))
    return _with_num_classes(cfg, len(names))


def resolve_training_classes(cfg, logger=None):
    """:func:`resolve_num_classes`, and OUTPUT_DIR/config.yml rewritten when it changed the count."""
    resolved = resolve_num_classes(cfg, logger)
    if resolved is not cfg:
        save_resolved_config(resolved, logger)
    return resolved


def save_resolved_config(cfg, logger=None):
    """Rewrite OUTPUT_DIR/config.yml (rank 0) with ``cfg``, so that it records a resolved
    MODEL.FCOS.NUM_CLASSES rather than 0 (``setup_run`` wrote it before the count was known)."""
    if not cfg.OUTPUT_DIR or get_rank() != 0:
        return None
    path = os.path.join(cfg.OUTPUT_DIR, "config.yml")
    atomic_write_text(cfg.dump(), path)
    (logger or logging.getLogger(__name__)).info("%s rewritten with %s %d", path, _KEY, cfg.MODEL.FCOS.NUM_CLASSES)
    return path


def checkpoint_classes(weight, cfg=None):
    """(number of classes with the background, names or None) of a detector checkpoint, or
    (None, None) for a file without an FCOS classifier (ImageNet weights). ``weight`` may be a path,
    URL, catalog or model-zoo name."""
    loaded = DetectronCheckpointer(cfg, None).read(weight)
    names = loaded.get(CATEGORIES)
    state = loaded.get("model", {})
    bias = state.get(CLASSIFIER_KEYS[1], state.get("module." + CLASSIFIER_KEYS[1]))
    if bias is None or loaded.get("_by_suffix"):
        return (len(names), list(names)) if names else (None, None)
    return int(bias.shape[0]) + 1, (list(names) if names else None)


def resolve_num_classes_for_inference(cfg, weight, logger=None):
    """A test, demo or export: ``cfg`` as is when MODEL.FCOS.NUM_CLASSES > 0; with 0, a frozen copy
    with the class count of the checkpoint ``weight``, else of DATASETS.TRAIN.

    Raises:
        ValueError: neither the checkpoint nor DATASETS.TRAIN gives the count.
    """
    if cfg.MODEL.FCOS.NUM_CLASSES > AUTO:
        return cfg
    logger = logger or logging.getLogger(__name__)
    if weight:
        num_classes, _ = checkpoint_classes(weight, cfg)
        if num_classes:
            logger.info("%s %d from the checkpoint %s", _KEY, num_classes, weight)
            return _with_num_classes(cfg, num_classes)
    try:
        return resolve_num_classes(cfg, logger)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ValueError(f"{_KEY} is {cfg.MODEL.FCOS.NUM_CLASSES} (from the data) but the checkpoint "
                         f"{weight or '(none)'} has no classifier and DATASETS.TRAIN gives no count ({exc}); "
                         f"set {_KEY} to the number of classes + 1") from exc


def check_test_classes(cfg, model_names, logger=None):
    """Warn for each DATASETS.TEST set whose classes are not the model's (``model_names``, a
    checkpoint's "categories"; nothing is checked without them). A set that cannot be read is left
    to the evaluation, which says why.

    Returns:
        list[str]: the names of the test sets whose classes differ.
    """
    if not model_names:
        return []
    differ = []
    for name in cfg.DATASETS.TEST:
        try:
            names = dataset_class_names([name], cfg.PATHS_CATALOG, is_train=False)
        except Exception:  # noqa: BLE001  the evaluation of this set reports the problem itself
            continue
        if not compare_class_names(model_names, names, name, logger):
            differ.append(name)
    return differ


def load_categories(json_file):
    """Category names of a COCO json, in contiguous-label order (sorted ids), background first."""
    with open(json_file) as f:
        categories = json.load(f).get("categories")
    if not categories:
        raise ValueError("{}: no 'categories' list".format(json_file))
    return ["__background"] + [c.get("name", str(c["id"])) for c in sorted(categories, key=lambda c: c["id"])]


def print_warning(message):
    """``warning: message`` on stderr (the demo scripts and the ``fcos`` command print, not log)."""
    print("warning: " + message, file=sys.stderr)


def category_names(num_classes, categories_from=None, names=None, checkpoint_names=None):
    """Class names of a model of ``num_classes`` classes (background excluded), background first.

    In this order: the COCO json ``categories_from``; the checkpoint's ``"categories"``
    (``checkpoint_names``, background first); ``names`` (label order, no background: e.g. those of
    a thresholds.json); :data:`COCO_CATEGORIES` for an 80-class model; else "class 1", "class 2", ...
    with a warning.

    Raises:
        ValueError: the chosen names do not count ``num_classes`` classes (naming where they came from).
    """
    if categories_from:
        found, source = load_categories(categories_from), categories_from
    elif checkpoint_names:
        found, source = list(checkpoint_names), "the checkpoint's categories"
    elif names:
        found, source = ["__background"] + list(names), "the thresholds file's names"
    elif num_classes + 1 == len(COCO_CATEGORIES):
        return list(COCO_CATEGORIES)
    else:
        print_warning("the model has {} classes, not COCO's 80, and its checkpoint does not name them; pass "
                      "--categories-from for their names".format(num_classes))
        return ["__background"] + ["class {}".format(i) for i in range(1, num_classes + 1)]
    if len(found) != num_classes + 1:
        raise ValueError("{} name {} classes but the model has {} ({} {})".format(
            source, len(found) - 1, num_classes, _KEY, num_classes + 1))
    return found


def compare_class_names(model_names, dataset_names, dataset, logger=None):
    """Warn when a model's classes (a checkpoint's "categories") are not a test set's, label by label:
    its AP would then compare one class's detections with another's ground truth.

    Returns:
        bool: True when they agree (or either is unknown).
    """
    if not model_names or not dataset_names or list(model_names) == list(dataset_names):
        return True
    logger = logger or logging.getLogger(__name__)
    differ = [f"label {i}: model {a!r}, {dataset} {b!r}"
              for i, (a, b) in enumerate(zip(model_names, dataset_names)) if i and a != b]
    if len(model_names) != len(dataset_names):
        differ.insert(0, f"the model has {len(model_names) - 1} classes, {dataset} {len(dataset_names) - 1}")
    logger.warning("the model's classes are not those of %s, so its AP compares different classes: %s",
                   dataset, "; ".join(differ[:5]) + ("; ..." if len(differ) > 5 else ""))
    return False
