"""Saving and loading models, optimizers and schedulers (the original's ``Checkpointer`` API).

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash never leaves a half-written file behind ``last_checkpoint``. Loading never runs code
from a file: ``.pth`` files go through ``torch.load(weights_only=True)``, Detectron ``.pkl``
files through a restricted unpickler.
"""
import logging
import os
import pickle
import tempfile

import torch

from fcos_core.utils.c2_model_loading import (
    convert_torchvision_state_dict,
    load_c2_format,
    looks_like_torchvision_classifier,
)
from fcos_core.utils.model_serialization import load_state_dict, strip_prefix_if_present
from fcos_core.utils.model_zoo import resolve_weight

LAST_CHECKPOINT = "last_checkpoint"


def atomic_torch_save(obj, path):
    """``torch.save`` to ``path`` through a temporary file and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(text, path):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def safe_torch_load(path):
    """``torch.load`` on the CPU that admits tensors and plain containers only."""
    try:
        return torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as exc:
        raise pickle.UnpicklingError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, "
            f"and loading it could run code from the file ({exc})"
        ) from exc


def _unwrap(model):
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


class Checkpointer:
    """Save/load ``{"model", "optimizer", "scheduler", ...extra}`` dicts under ``save_dir``."""

    def __init__(self, model, optimizer=None, scheduler=None, save_dir="", save_to_disk=None, logger=None):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.save_dir = save_dir
        self.save_to_disk = save_to_disk
        self.logger = logger or logging.getLogger(__name__)

    def save(self, name, tag_last=True, **kwargs):
        """Write ``<save_dir>/<name>.pth`` atomically and, with ``tag_last`` (the default), point
        ``last_checkpoint`` at it (``model_best`` is saved with ``tag_last=False``: resuming takes
        the latest state, not the best). Returns the path, or None when this process saves nothing."""
        if not self.save_dir or not self.save_to_disk:
            return None
        data = {"model": _unwrap(self.model).state_dict()}
        if self.optimizer is not None:
            data["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            data["scheduler"] = self.scheduler.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        if tag_last:
            self.tag_last_checkpoint(path)
        return path

    def load(self, f=None, use_latest=True, strict=True):
        """Load the latest checkpoint of ``save_dir`` if there is one (and ``use_latest``), else ``f``.

        Returns what the file held besides model, optimizer and scheduler (an empty dict when
        there was nothing to load), e.g. ``{"iteration": 1000}``.
        """
        if use_latest and self.has_checkpoint():
            f = self.get_checkpoint_file()
        if not f:
            self.logger.info("No checkpoint found. Initializing model from scratch")
            return {}
        self.logger.info("Loading checkpoint from %s", f)
        checkpoint = self._load_file(f)
        self._load_model(checkpoint, strict=strict, source=str(f))
        if "optimizer" in checkpoint and self.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint.pop("optimizer"))
        if "scheduler" in checkpoint and self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint.pop("scheduler"))
        return {k: v for k, v in checkpoint.items() if k not in ("model", "optimizer", "scheduler", "_by_suffix")}

    def has_checkpoint(self):
        return bool(self.save_dir) and os.path.exists(os.path.join(self.save_dir, LAST_CHECKPOINT))

    def get_checkpoint_file(self):
        """The path named in ``last_checkpoint`` (relative paths are taken from ``save_dir``)."""
        try:
            with open(os.path.join(self.save_dir, LAST_CHECKPOINT)) as f:
                last = f.read().strip()
        except OSError:
            return ""
        if last and not os.path.isabs(last):
            last = os.path.join(self.save_dir, last)
        return last

    def tag_last_checkpoint(self, last_filename):
        atomic_write_text(os.path.basename(last_filename), os.path.join(self.save_dir, LAST_CHECKPOINT))

    def _load_file(self, f):
        if not os.path.exists(f):
            raise FileNotFoundError(f"checkpoint file not found: {f}")
        return safe_torch_load(f)

    def _load_model(self, checkpoint, strict=True, source="checkpoint"):
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{source}: expected a state dict or {{'model': state_dict}}, found {type(state).__name__}")
        by_suffix = bool(checkpoint.get("_by_suffix", False))
        return load_state_dict(
            _unwrap(self.model), state, strict=strict and not by_suffix, by_suffix=by_suffix, source=source
        )


class DetectronCheckpointer(Checkpointer):
    """Checkpointer that also reads ``catalog://`` names, URLs, model-zoo names
    (``fcos_imprv_R_50_FPN_1x``, see :mod:`fcos_core.utils.model_zoo`), Detectron ``.pkl`` files and
    torchvision ImageNet classifiers (the latter two initialise the backbone body by suffix).

    ``paths_catalog`` is the module with a ``ModelCatalog`` (default
    :mod:`fcos_core.config.paths_catalog`); passing the config is not needed.
    """

    def __init__(self, cfg, model, optimizer=None, scheduler=None, save_dir="", save_to_disk=None, logger=None):
        super().__init__(model, optimizer, scheduler, save_dir, save_to_disk, logger)
        self.cfg = cfg.clone() if cfg is not None else None

    def _resolve(self, f):
        if f.startswith("catalog://"):
            from fcos_core.config.paths_catalog import ModelCatalog

            f = ModelCatalog.get(f[len("catalog://"):])
            self.logger.info("catalog name resolved to %s", f)
        # a URL or a model-zoo name becomes the path of its (checked) copy in the torch hub cache
        return resolve_weight(f)

    def _load_file(self, f):
        f = self._resolve(str(f))
        if not os.path.exists(f):
            raise FileNotFoundError(f"checkpoint file not found: {f}")
        if f.endswith(".pkl"):
            return {"model": load_c2_format(f), "_by_suffix": True}
        loaded = safe_torch_load(f)
        if not isinstance(loaded, dict):
            raise ValueError(f"{f}: expected a dict, found {type(loaded).__name__}")
        if "model" not in loaded:
            loaded = {"model": loaded}
        state = strip_prefix_if_present(loaded["model"], "module.")
        if looks_like_torchvision_classifier(state):
            loaded = {"model": convert_torchvision_state_dict(state), "_by_suffix": True}
        return loaded
