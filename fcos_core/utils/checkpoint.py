"""Saving and loading models, optimizers and schedulers (the original's ``Checkpointer`` API).

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash never leaves a half-written file behind ``last_checkpoint``. Loading never runs code
from a file: ``.pth`` files go through ``torch.load(weights_only=True)``, Detectron ``.pkl``
files through a restricted unpickler.

Resume versus fine-tune (:meth:`Checkpointer.resume_or_load`, as detectron2's): when ``save_dir``
has a ``last_checkpoint`` everything is restored from it (model, optimizer, scheduler, iteration)
and MODEL.WEIGHT is ignored; otherwise MODEL.WEIGHT gives the weights only, and a classifier of
another class count is left at the model's initialisation. Checkpoints carry the class names
(``"categories"``: background first) when the checkpointer was given them.
"""
import logging
import os
import pickle
import re
import tempfile

import torch

from fcos_core.utils.c2_model_loading import (
    convert_torchvision_state_dict,
    load_c2_format,
    looks_like_torchvision_classifier,
    rename_deformable_conv_weights,
)
from fcos_core.utils.formats.convert import convert_for_loading
from fcos_core.utils.model_serialization import (
    check_backbone_init, load_state_dict, match_state_dict, strip_prefix_if_present,
)
from fcos_core.utils.model_zoo import check_imagenet_config, resolve_weight

LAST_CHECKPOINT = "last_checkpoint"
CATEGORIES = "categories"  # class names in a checkpoint, by contiguous label, background first
# the FCOS classifier: the only tensors whose shape depends on the number of classes
CLASSIFIER_KEYS = ("rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias")
_NOT_EXTRA = ("model", "optimizer", "scheduler", "_by_suffix")


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
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))  # torch's message names the object
        raise pickle.UnpicklingError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers "
            f"({found.group(1) if found else exc}), and loading it could run code from the file; for a file from "
            f"a source you trust, tools/convert_checkpoint.py --trust-file converts it"
        ) from exc
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError) as exc:  # truncated, empty, not a torch file
        raise RuntimeError(f"cannot read the checkpoint {path} ({os.path.getsize(path)} bytes): it is truncated, "
                           f"corrupt or not a PyTorch file ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _unwrap(model):
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


class Checkpointer:
    """Save/load ``{"model", "optimizer", "scheduler", ...extra}`` dicts under ``save_dir``.

    ``categories`` (list of str, background first, or None): written into every saved file as
    ``"categories"`` so that tests, demos and exports name the classes without the dataset.
    """

    def __init__(self, model, optimizer=None, scheduler=None, save_dir="", save_to_disk=None, logger=None,
                 categories=None):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.save_dir = save_dir
        self.save_to_disk = save_to_disk
        self.logger = logger or logging.getLogger(__name__)
        self.categories = list(categories) if categories is not None else None

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
        if self.categories is not None:
            data[CATEGORIES] = list(self.categories)
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        if tag_last:
            self.tag_last_checkpoint(path)
        return path

    def load(self, f=None, use_latest=True, strict=True, weights_only=False, reinit_on_mismatch=()):
        """Load the latest checkpoint of ``save_dir`` if there is one (and ``use_latest``), else ``f``.

        With ``weights_only`` the model alone is loaded: the file's optimizer, scheduler and
        training state are ignored and only its ``"categories"`` are returned.
        ``reinit_on_mismatch``: model keys that may have another shape in the file (see
        :func:`~fcos_core.utils.model_serialization.load_state_dict`).

        Returns what the file held besides model, optimizer and scheduler (an empty dict when
        there was nothing to load), e.g. ``{"iteration": 1000, "categories": [...]}``.
        """
        if use_latest and self.has_checkpoint():
            f = self.get_checkpoint_file()
        if not f:
            self.logger.info("No checkpoint found. Initializing model from scratch")
            return {}
        self.logger.info("Loading checkpoint from %s", f)
        checkpoint = self._load_file(f)
        self._load_model(checkpoint, strict=strict, source=str(f), reinit_on_mismatch=reinit_on_mismatch)
        if weights_only:
            return {CATEGORIES: checkpoint[CATEGORIES]} if CATEGORIES in checkpoint else {}
        if "optimizer" in checkpoint and self.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint.pop("optimizer"))
        if "scheduler" in checkpoint and self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint.pop("scheduler"))
        return {k: v for k, v in checkpoint.items() if k not in _NOT_EXTRA}

    def resume_or_load(self, weight):
        """Start a training run: resume, or initialise from ``weight`` (MODEL.WEIGHT) for fine-tuning.

        When ``save_dir`` has a ``last_checkpoint``, everything is restored from the file it names
        (model, optimizer, scheduler, iteration...) and ``weight`` is ignored, which the log says.
        Otherwise ``weight`` (path, URL, catalog or model-zoo name, ImageNet file; may be empty)
        gives the weights only: its optimizer, scheduler and iteration are not loaded (a fresh
        schedule from iteration 0), and :data:`CLASSIFIER_KEYS` of another shape (another class
        count) keep the model's initialisation (the FCOS head's, with MODEL.FCOS.PRIOR_PROB).

        Returns:
            dict: as :meth:`load` (no "iteration" when initialising from ``weight``).
        """
        if self.has_checkpoint():
            last = self.get_checkpoint_file()
            if not os.path.exists(last):
                raise FileNotFoundError(
                    f"{os.path.join(self.save_dir, LAST_CHECKPOINT)} names {last}, which does not exist: put the "
                    f"file back, point {LAST_CHECKPOINT} at another checkpoint, or delete it to start again")
            ignored = f"; MODEL.WEIGHT {weight} is ignored" if weight else ""
            self.logger.info("Resuming from %s (OUTPUT_DIR has %s)%s", last, LAST_CHECKPOINT, ignored)
            return self.load(last, use_latest=False)
        if not weight:
            self.logger.info("No checkpoint and no MODEL.WEIGHT: training from scratch")
            return {}
        self.logger.info("Initialising from %s (fine-tuning: its optimizer, schedule and iteration are not "
                         "loaded; training starts at iteration 0)", weight)
        return self.load(weight, use_latest=False, weights_only=True, reinit_on_mismatch=CLASSIFIER_KEYS)

    def read(self, f):
        """The file ``f`` as :meth:`load` sees it (``{"model": state_dict, ...}``), without loading it."""
        return self._load_file(str(f))

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

    def _load_model(self, checkpoint, strict=True, source="checkpoint", reinit_on_mismatch=()):
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{source}: expected a state dict or {{'model': state_dict}}, found {type(state).__name__}")
        model = _unwrap(self.model)
        if checkpoint.get("_by_suffix", False):
            return self._init_backbone(model, state, source)
        try:
            return load_state_dict(model, state, strict=strict, source=source, reinit_on_mismatch=reinit_on_mismatch)
        except RuntimeError as exc:
            raise RuntimeError(str(exc) + _load_hint(model.state_dict(), state)) from None

    def _init_backbone(self, model, state, source):
        """ImageNet weights (body names) into the backbone body, by suffix; deformable convs take
        the ImageNet kernels of the convs they replace; a file of another backbone is refused."""
        model_keys = list(model.state_dict().keys())
        state, renamed = rename_deformable_conv_weights(state, model_keys)
        if renamed:
            self.logger.info("%s: %d conv weights renamed for the deformable convs (%s -> %s, ...)", source,
                             len(renamed), renamed[0], renamed[0][: -len(".weight")] + ".conv.weight")
        report = load_state_dict(model, state, strict=False, by_suffix=True, source=source)
        check_backbone_init(report, model_keys, source)
        return report


def _load_hint(model_state, state):
    """What to do about a detector checkpoint that does not fit: set the class count when only the
    classifier differs, else compare the architecture keys."""
    _, report = match_state_dict(model_state, state)
    classifier_only = not (report.missing or report.unexpected) and all(
        m[0] in CLASSIFIER_KEYS for m in report.mismatched)
    if not classifier_only:
        return ("\nIt is a checkpoint of another architecture: compare MODEL.BACKBONE.CONV_BODY, MODEL.RESNETS.*, "
                "MODEL.FCOS.* (NUM_CONVS, USE_DCN_IN_TOWER, ...) with the config it was trained with.")
    in_file, in_model = (int(report.mismatched[0][i][0]) for i in (3, 2))
    return (f"\nThe file's classifier has {in_file} classes and the model {in_model} (MODEL.FCOS.NUM_CLASSES "
            f"{in_model + 1}, background included): to run the file, set MODEL.FCOS.NUM_CLASSES {in_file + 1} (or 0: "
            f"from the checkpoint); to fine-tune it to {in_model} classes, give it as MODEL.WEIGHT to "
            "tools/train_net.py with an OUTPUT_DIR without last_checkpoint.")


class DetectronCheckpointer(Checkpointer):
    """Checkpointer that also reads ``catalog://`` names, URLs, model-zoo names
    (``fcos_imprv_R_50_FPN_1x``, see :mod:`fcos_core.utils.model_zoo`), Detectron ``.pkl`` files and
    torchvision ImageNet classifiers (the latter two initialise the backbone body by suffix), and
    torchvision's and mmdetection's FCOS detectors: converted on load (:mod:`fcos_core.utils.formats`)
    and refused, naming the config file to use, when ``cfg`` lacks the settings they need.

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
        if self.cfg is not None:  # torchvision ImageNet weights (by name) need RGB input, stride in 3x3
            check_imagenet_config(self.cfg, f)
        # a URL, a model-zoo or torchvision:// name becomes the path of its (checked) copy in the torch hub cache
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
        converted = convert_for_loading(loaded, f, self.cfg, self.logger)  # torchvision's or mmdetection's FCOS
        if converted is not None:
            return converted
        if "model" not in loaded:
            loaded = {"model": loaded}
        state = strip_prefix_if_present(loaded["model"], "module.")
        if looks_like_torchvision_classifier(state):
            loaded = {"model": convert_torchvision_state_dict(state), "_by_suffix": True}
        return loaded
