"""A checkpoint of any known library under our detector's key names, and the checks around it.

:func:`convert_checkpoint` dispatches on :func:`~fcos_core.utils.formats.detect.detect_format`:
torchvision's and mmdetection's FCOS go through their converters, the original format (ours) is
carried over key by key ("module." stripped). :func:`refuse_config_mismatch` refuses a config that
the converted weights do not fit. :func:`convert_for_loading` is what the checkpointer calls on a
file given as MODEL.WEIGHT. Nothing here builds a model: ``fcos_core.engine.conversion`` does.
"""
import logging
import os
from collections import OrderedDict

import torch

from fcos_core.utils.formats.detect import (
    FORMATS, OTHER_DETECTORS, UNKNOWN, detect_format, first_keys, state_dict_of, wrapper_key,
)
from fcos_core.utils.formats.mmdet import mmdet_fcos_to_detector
from fcos_core.utils.formats.mmdet_zoo import mmdet_zoo_entry
from fcos_core.utils.formats.report import ConversionReport, config_mismatches
from fcos_core.utils.formats.torchvision import torchvision_fcos_to_detector

# the classifier's shape follows the class count: fine-tuning changes it, the strict load checks it
_NOT_REFUSED = ("MODEL.FCOS.NUM_CLASSES",)


class CheckpointFormatError(ValueError):
    """A file that is not a detector of a library we know (or not a detector at all)."""


class ConfigMismatchError(ValueError):
    """Converted weights given to a config whose settings they were not trained with."""


def convert_checkpoint(checkpoint, source_name):
    """Our detector's state dict from a loaded checkpoint of any known library.

    Args:
        checkpoint: what the file holds (a dict of tensors, or one that wraps it).
        source_name: the file name, for messages.

    Returns:
        (OrderedDict of tensors under our key names, :class:`ConversionReport`).

    Raises:
        CheckpointFormatError: an unknown library's file, or ImageNet weights (not a detector).
    """
    fmt = detect_format(checkpoint)
    if fmt == "fcos":
        return _identity(checkpoint)
    if fmt == "torchvision_fcos":
        return torchvision_fcos_to_detector(state_dict_of(checkpoint))
    if fmt == "mmdet_fcos":
        meta = checkpoint.get("meta") if "state_dict" in checkpoint else None
        return mmdet_fcos_to_detector(state_dict_of(checkpoint), meta=_with_zoo_name(meta, source_name))
    if fmt == UNKNOWN:
        raise CheckpointFormatError("{} is not a checkpoint of a format we know ({}). Known formats:\n{}".format(
            source_name, first_keys(checkpoint), "\n".join("  {}: {}".format(k, v) for k, v in FORMATS.items())))
    raise CheckpointFormatError(
        "{} is {}: ImageNet weights for a backbone, not a detector, so there is nothing to convert. Give the file "
        "as MODEL.WEIGHT as it is: the checkpointer maps it onto the backbone body.".format(source_name, FORMATS[fmt]))


def _with_zoo_name(meta, source_name):
    """``meta`` with "zoo_name" taken from the file name when it is one of mmdetection's released files
    (``<config name>-<hash>.pth``, as downloaded), so that the converter takes that release's settings
    (the 1x and 2x models have the same tensors). A "zoo_name" already in ``meta`` wins."""
    meta = dict(meta) if isinstance(meta, dict) else {}
    entry = mmdet_zoo_entry(os.path.basename(str(source_name)))
    if entry is not None and not meta.get("zoo_name"):
        meta["zoo_name"] = entry.name
    return meta


def _identity(checkpoint):
    """The original format (ours): every tensor under its own key, a "module." prefix stripped."""
    wrapper = wrapper_key(checkpoint)
    inner, stripped = checkpoint[wrapper] if wrapper else checkpoint, state_dict_of(checkpoint)
    report = ConversionReport(source="original")
    state = OrderedDict()
    for (key, value), ours in zip(inner.items(), stripped):
        if not isinstance(value, torch.Tensor):
            report.dropped.append((key, "not a tensor ({})".format(type(value).__name__)))
            continue
        state[ours] = value
        report.mapped.append((key, ours))
    if stripped is not inner:
        report.notes.append("'module.' prefix stripped (saved from DistributedDataParallel)")
    left = [k for k in checkpoint if k not in (wrapper, "categories")] if wrapper else []
    if left:
        report.notes.append("not carried over: {} (a converted file starts training afresh)".format(", ".join(left)))
    return state, report


def checkpoint_categories(checkpoint, fmt):
    """Class names, background first, that the file records, or None.

    Ours: "categories"; mmdetection: meta "CLASSES" (2.x) or meta "dataset_meta" "classes" (3.x).
    """
    if not isinstance(checkpoint, dict):
        return None
    if fmt == "fcos" and checkpoint.get("categories"):
        return list(checkpoint["categories"])
    meta = checkpoint.get("meta") if fmt == "mmdet_fcos" else None
    if not isinstance(meta, dict):
        return None
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    names = meta.get("CLASSES") or dataset_meta.get("classes")
    return ["__background"] + [str(n) for n in names] if names else None


def refuse_config_mismatch(cfg, report, source_name):
    """Raise :class:`ConfigMismatchError` when ``cfg`` differs from ``report.required_config``.

    The message names the file, the library, each key with the config's and the needed value, and
    the config file to use. MODEL.FCOS.NUM_CLASSES is not checked here (fine-tuning changes it; the
    strict load names the classifier's shape).
    """
    required = {k: v for k, v in report.required_config.items() if k not in _NOT_REFUSED}
    bad = config_mismatches(cfg, required)
    if not bad:
        return
    lines = ["  {}: the config has {!r}, the weights need {!r}".format(key, have, want) for key, have, want in bad]
    use = suggested_config_path(report)
    raise ConfigMismatchError(
        "{} holds {}'s FCOS, whose weights need settings that the config does not have:\n{}\n{}".format(
            source_name, report.source, "\n".join(lines),
            "use {} (or set these keys)".format(use) if use else "set these keys"))


def suggested_config_path(report):
    """``report.suggested_config`` as a path from the repository root (``configs/...``), or ""."""
    path = report.suggested_config
    if not path or path.startswith("configs/") or os.path.isabs(path):
        return path
    return "configs/" + path


def convert_for_loading(checkpoint, source_name, cfg=None, logger=None):
    """For the checkpointer: ``{"model": state[, "categories"]}`` when ``checkpoint`` is another
    library's detector (converted, summary logged, checked against ``cfg`` when given), else None."""
    fmt = detect_format(checkpoint)
    if fmt not in OTHER_DETECTORS:
        return None
    logger = logger or logging.getLogger(__name__)
    state, report = convert_checkpoint(checkpoint, source_name)
    logger.info("%s converted on load: %s", source_name, report.summary())
    for note in report.notes:
        logger.info("%s: %s", source_name, note)
    if cfg is not None:
        refuse_config_mismatch(cfg, report, source_name)
    else:
        logger.warning("%s: no config given, so its needs (%s) are not checked", source_name, report.required_config)
    out = {"model": state}
    names = checkpoint_categories(checkpoint, fmt)
    if names:
        out["categories"] = names
    return out
