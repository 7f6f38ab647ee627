"""A checkpoint of torchvision, mmdetection or the original FCOS written in our format, checked
against a config (the work of tools/convert_checkpoint.py).

The output file holds ``{"model": state_dict, "categories": [...]}`` (class names, background
first, where the source has them), as the checkpoints of tools/train_net.py do, so every tool
loads it strictly. The key mapping itself is :mod:`fcos_core.utils.formats`.
"""
import os
import pickle
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from fcos_core.engine.coco_classes import COCO_CATEGORIES
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils.c2_model_loading import safe_load_pickle
from fcos_core.utils.checkpoint import CLASSIFIER_KEYS, atomic_torch_save, safe_torch_load
from fcos_core.utils.formats.convert import (
    ConfigMismatchError, checkpoint_categories, convert_checkpoint, refuse_config_mismatch, suggested_config_path,
)
from fcos_core.utils.formats.detect import FORMATS, detect_format
from fcos_core.utils.formats.report import ConversionReport
from fcos_core.utils.model_serialization import LoadReport, load_state_dict

class UntrustedCheckpointError(pickle.UnpicklingError):
    """A ``.pth`` whose non-tensor objects ``torch.load(weights_only=True)`` refuses to build."""


def load_checkpoint_file(path, trust=False):
    """The object a checkpoint file holds, loaded on the CPU.

    ``.pkl`` files go through the restricted unpickler of Detectron weights; other files through
    ``torch.load(weights_only=True)`` or, with ``trust``, ``weights_only=False``, which runs code
    from the file: only for a file from a source one trusts.

    Raises:
        FileNotFoundError; UntrustedCheckpointError (objects other than tensors and containers,
        without ``trust``); RuntimeError (a truncated or corrupt file, a library missing here).
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError("checkpoint file not found: {}".format(path))
    if path.endswith(".pkl"):
        return safe_load_pickle(path)
    if not trust:
        try:
            return safe_torch_load(path)
        except pickle.UnpicklingError as exc:
            raise UntrustedCheckpointError(
                "{}.\nmmdetection (mmengine) checkpoints keep such objects in 'meta' and 'message_hub'. --trust-file "
                "loads the file with torch.load(weights_only=False), which runs code from it.".format(exc)) from exc
    try:
        return torch.load(path, map_location=torch.device("cpu"), weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise RuntimeError("{} holds objects of a library that is not installed here ({}): install it (for an "
                           "mmdetection file: pip install mmengine) and convert again".format(path, exc)) from exc


@dataclass
class ConversionResult:
    """What :func:`convert_file` did: the format, the key report, the class names written (or
    None), and, when a config was given, the strict load into its model."""

    fmt: str
    report: ConversionReport
    categories: Optional[List[str]] = None
    load_report: Optional[LoadReport] = None
    notes: List[str] = field(default_factory=list)


def convert_file(input_path, output_path, cfg=None, model=None, trust_file=False):
    """Convert ``input_path`` into our format at ``output_path`` (written atomically).

    Args:
        cfg: a config to check the weights against (its needs, then a strict load into its model);
            nothing is written when they do not fit.
        model: the model built from ``cfg`` (built here when None).
        trust_file: load with ``weights_only=False`` (see :func:`load_checkpoint_file`).

    Raises:
        CheckpointFormatError, ConfigMismatchError, UntrustedCheckpointError, RuntimeError.
    """
    checkpoint = load_checkpoint_file(input_path, trust=trust_file)
    fmt = detect_format(checkpoint)
    state, report = convert_checkpoint(checkpoint, str(input_path))
    result = ConversionResult(fmt=fmt, report=report, categories=checkpoint_categories(checkpoint, fmt))
    if result.categories is None and fmt == "torchvision_fcos" and _class_count(state) == len(COCO_CATEGORIES):
        result.categories = list(COCO_CATEGORIES)  # its labels are the 80 COCO classes in category id order
    if cfg is not None:
        result.load_report = check_against_config(state, report, cfg, str(input_path), model)
    out = {"model": state}
    if result.categories:
        out["categories"] = result.categories
    os.makedirs(os.path.dirname(os.path.abspath(str(output_path))), exist_ok=True)
    atomic_torch_save(out, str(output_path))
    return result


def _class_count(state):
    """MODEL.FCOS.NUM_CLASSES (background included) of a state dict, or None without a classifier."""
    bias = state.get(CLASSIFIER_KEYS[1])
    return int(bias.shape[0]) + 1 if bias is not None else None


def check_against_config(state, report, cfg, source, model=None):
    """Refuse ``state`` unless ``cfg`` has what ``report`` needs and its model loads it strictly.

    Returns the strict load's :class:`LoadReport`; raises :class:`ConfigMismatchError` naming the
    keys (config value, needed value) or the missing / unexpected tensors, and the config to use.
    """
    refuse_config_mismatch(cfg, report, source)
    if model is None:
        if cfg.MODEL.FCOS.NUM_CLASSES == 0 and _class_count(state):  # 0: the checkpoint's class count
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.FCOS.NUM_CLASSES = _class_count(state)
        model = build_detection_model(cfg)
    try:
        return load_state_dict(model, state, strict=True, source=source)
    except RuntimeError as exc:
        use = suggested_config_path(report)
        hint = "\nthe weights were made for {}".format(use) if use else ""
        raise ConfigMismatchError("{}{}".format(exc, hint)) from None


def result_lines(result, input_path, output_path, config_file=""):
    """The report that tools/convert_checkpoint.py prints: a list of str lines."""
    lines = ["{} -> {}".format(input_path, output_path),
             "format: {} ({})".format(result.fmt, FORMATS.get(result.fmt, result.fmt))]
    lines += result.report.lines()
    if result.categories:
        lines.append("categories: {} names written ({} ...)".format(
            len(result.categories) - 1, ", ".join(result.categories[1:4])))
    else:
        lines.append("categories: none in the source (tools name the classes 1..N)")
    use = suggested_config_path(result.report)
    if use:
        lines.append("run it with: --config-file {} MODEL.WEIGHT {}".format(use, output_path))
    if result.load_report is not None:
        lines.append("checked against {}: {} tensors loaded strictly, none missing or unexpected".format(
            config_file or "the config", len(result.load_report.loaded)))
    return lines
