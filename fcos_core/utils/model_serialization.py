"""Matching a loaded state dict to a model, with a report of what did not fit.

Two modes:
- strict (a full detector checkpoint): every key must match by name and shape, after removing
  a ``module.`` prefix left by DistributedDataParallel; keys named in ``reinit_on_mismatch``
  (fine-tuning to another class count: the classifier) may differ in shape and are then left
  at the model's own initialisation;
- by suffix (initialising a backbone from ImageNet weights): each model key takes the longest
  loaded key that is a dotted suffix of it, so ``layer1.0.conv1.weight`` fills
  ``backbone.body.layer1.0.conv1.weight``; :func:`check_backbone_init` then refuses a file of
  another backbone (a key of the body left out, or one of the file unused).
"""
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field

import torch


@dataclass
class LoadReport:
    """What a load matched, and what it could not."""

    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # model keys nothing was loaded into
    unexpected: list = field(default_factory=list)  # loaded keys that no model key took
    mismatched: list = field(default_factory=list)  # (model key, loaded key, model shape, loaded shape)
    # mismatches that were allowed: the model key keeps its own initialisation (same tuples)
    reinitialised: list = field(default_factory=list)

    @property
    def ok(self):
        """True when every key of the model and of the file was used (allowed re-initialisations aside)."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit=20):
        """A readable multi-line summary, at most ``limit`` names per list."""
        lines = [f"loaded {len(self.loaded)} tensors"]

        def block(title, items):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items[:limit])
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")

        block("missing in the file", self.missing)
        block("unexpected in the file", self.unexpected)
        block(
            "wrong shape",
            [f"{m}: model {tuple(ms)} vs file {tuple(ls)} ({lk})" for m, lk, ms, ls in self.mismatched],
        )
        block(
            "another class count, allowed when fine-tuning (kept the model's initialisation)",
            [f"{m}: model {tuple(ms)} vs file {tuple(ls)}" for m, lk, ms, ls in self.reinitialised],
        )
        return "\n".join(lines)


def strip_prefix_if_present(state_dict, prefix):
    """A copy of ``state_dict`` with ``prefix`` removed, if every key starts with it."""
    keys = list(state_dict.keys())
    if not keys or not all(key.startswith(prefix) for key in keys):
        return state_dict
    return OrderedDict((key[len(prefix):], value) for key, value in state_dict.items())


def _suffix_matches(model_keys, loaded_keys):
    """For each model key, the longest loaded key that equals it or is a ``.``-suffix of it."""
    available = set(loaded_keys)
    matches = {}
    for mk in model_keys:
        parts = mk.split(".")
        for start in range(len(parts)):
            cand = ".".join(parts[start:])
            if cand in available:
                matches[mk] = cand
                break
    return matches


def match_state_dict(model_state, loaded_state, by_suffix=False):
    """Pair model keys with loaded tensors.

    Returns:
        (new_state, report): ``new_state`` maps model keys to loaded tensors whose shapes
        fit; ``report`` lists what was missing, unexpected or of the wrong shape.
    """
    loaded_state = strip_prefix_if_present(loaded_state, "module.")
    if by_suffix:
        pairs = _suffix_matches(model_state.keys(), loaded_state.keys())
    else:
        pairs = {k: k for k in model_state.keys() if k in loaded_state}
    report = LoadReport()
    new_state = OrderedDict()
    for mk, lk in pairs.items():
        value = loaded_state[lk]
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        if tuple(value.shape) != tuple(model_state[mk].shape):
            report.mismatched.append((mk, lk, tuple(model_state[mk].shape), tuple(value.shape)))
            continue
        new_state[mk] = value
        report.loaded.append(mk)
    used = set(pairs.values())
    report.missing = [k for k in model_state.keys() if k not in pairs]
    report.unexpected = [k for k in loaded_state.keys() if k not in used]
    return new_state, report


def _allow_mismatches(report, reinit_on_mismatch):
    """Move the mismatches of keys named in ``reinit_on_mismatch`` to ``report.reinitialised``."""
    allowed = set(reinit_on_mismatch)
    report.reinitialised = [m for m in report.mismatched if m[0] in allowed]
    report.mismatched = [m for m in report.mismatched if m[0] not in allowed]


def load_state_dict(model, loaded_state, strict=True, by_suffix=False, source="checkpoint", reinit_on_mismatch=()):
    """Copy ``loaded_state`` into ``model``; raise on anything that does not fit when ``strict``.

    Args:
        model: an ``nn.Module``.
        loaded_state: mapping of names to tensors (or numpy arrays).
        strict: raise ``RuntimeError`` with the full report unless every key matches.
        by_suffix: match by dotted suffix (backbone initialisation) instead of by name.
        source: the file name, for messages.
        reinit_on_mismatch: model keys that may have another shape in the file (fine-tuning to
            another class count); they are not loaded and keep the model's initialisation, which
            the report lists under ``reinitialised`` and the log names with both shapes.

    Returns:
        The :class:`LoadReport`.
    """
    model_state = model.state_dict()
    new_state, report = match_state_dict(model_state, loaded_state, by_suffix=by_suffix)
    _allow_mismatches(report, reinit_on_mismatch)
    if strict and not report.ok:
        raise RuntimeError(f"{source} does not fit the model:\n{report.describe(limit=10)}")
    with torch.no_grad():
        for key, value in new_state.items():
            model_state[key].copy_(value)
    logger = logging.getLogger(__name__)
    logger.info("loaded %d of %d tensors from %s", len(report.loaded), len(model_state), source)
    if report.reinitialised:
        logger.warning("%s: kept the model's initialisation for %s", source, ", ".join(
            f"{m} (model {tuple(ms)}, file {tuple(ls)})" for m, _, ms, ls in report.reinitialised))
    if not report.ok:
        logger.warning("%s: %s", source, report.describe())
    return report


# Model keys that an ImageNet file does not hold: running statistics (Detectron files have none;
# FrozenBatchNorm keeps mean 0, variance 1) and the offset convs of deformable convolutions,
# which have no ImageNet counterpart and keep their own initialisation.
_NOT_IN_IMAGENET_FILES = re.compile(r"(\.running_mean|\.running_var|\.num_batches_tracked|\.offset\.weight|\.offset\.bias)$")


def check_backbone_init(report, model_keys, source, body_prefix="backbone.body.", limit=8):
    """Refuse an ImageNet initialisation (by-suffix load) that does not fit the backbone body.

    Args:
        report (LoadReport): of the by-suffix load.
        model_keys: the model's state-dict keys; those under ``body_prefix`` must all be loaded
            (running statistics and deformable offset convs aside), and nothing of the file may
            be left unused or have another shape. A model without ``body_prefix`` keys is not checked.
        source: the file, for the message.

    Raises:
        RuntimeError: naming ``source`` and the first ``limit`` keys of each kind (e.g. R-101
            weights for an R-50 body: ``layer3.6.*`` unused; MobileNet for a ResNet: nothing fits).
    """
    body = [k for k in model_keys if k.startswith(body_prefix)]
    if not body:
        return
    missing = [k for k in report.missing if k.startswith(body_prefix) and not _NOT_IN_IMAGENET_FILES.search(k)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} backbone keys not in the file: {', '.join(missing[:limit])}")
    if report.unexpected:
        problems.append(f"{len(report.unexpected)} keys of the file unused: {', '.join(report.unexpected[:limit])}")
    if report.mismatched:
        problems.append(f"{len(report.mismatched)} of another shape: " + ", ".join(
            f"{m} (model {tuple(ms)}, file {tuple(ls)})" for m, _, ms, ls in report.mismatched[:limit]))
    if problems:
        raise RuntimeError(
            f"{source} does not fit the backbone (MODEL.BACKBONE.CONV_BODY, MODEL.RESNETS.*): it looks like "
            "weights of another architecture; " + "; ".join(problems))
