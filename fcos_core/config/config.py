"""Strict yacs config node and small config helpers.

yacs already refuses keys that the defaults do not define, but its message
("Non-existent config key: X") names neither the file the key came from nor
the key the user probably meant. A typo in a yaml file is the most common
config mistake, so :class:`CfgNode` checks every key before merging and
raises :class:`UnknownConfigKeyError` with the source and the closest valid
dotted key. Everything else (type checks, deprecated and renamed keys,
``new_allowed`` nodes) is left to yacs.

This module sits at the bottom of the package: it imports neither the
global ``cfg`` nor any other part of ``fcos_core``.
"""

import difflib
import re
import warnings

from yacs.config import CfgNode as _YacsCfgNode


__all__ = ["CfgNode", "UnknownConfigKeyError", "resolve_device"]


class UnknownConfigKeyError(KeyError):
    """A key that the defaults do not define (a ``KeyError``).

    ``str(KeyError(msg))`` wraps the message in quotes; this subclass prints
    the plain sentence so tracebacks read naturally.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _dotted_keys(node, prefix=""):
    """Every dotted key of a config tree, inner nodes included, in tree order.

    Inner nodes are listed too so that a misspelt group ("MODEL.FCOSS") gets
    the group as its suggestion.
    """
    keys = []
    for name, value in node.items():
        full = prefix + name
        keys.append(full)
        if isinstance(value, dict):
            keys.extend(_dotted_keys(value, full + "."))
    return keys


def closest_key(key, candidates):
    """The candidate most similar to ``key`` (difflib ratio >= 0.6), or None."""
    matches = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


class CfgNode(_YacsCfgNode):
    """A yacs ``CfgNode`` whose merges fail loudly and helpfully on bad keys.

    ``merge_from_file``, ``merge_from_other_cfg`` and ``merge_from_list``
    first check that every incoming key exists in this node (unless yacs
    marks it deprecated or renamed, or the node allows new keys) and raise
    :class:`UnknownConfigKeyError` naming the key, where it came from and
    the closest valid key. A value of the wrong type raises yacs's
    ``ValueError``, which names the full key; for files the file name is
    appended. Merging into a frozen node raises ``AttributeError`` (plain
    yacs silently allows it because it writes through ``dict.__setitem__``).

    Subclassing keeps the class across ``clone()`` and nested nodes, since
    yacs builds children with ``cls(...)`` and clones with ``deepcopy``.
    """

    def merge_from_file(self, cfg_filename):
        """Merge a yaml file into this node, in place.

        Raises:
            UnknownConfigKeyError: a key of the file is not a config key.
            ValueError: a value has the wrong type (message names key and file).
        """
        with open(cfg_filename, "r") as f:
            other = self.load_cfg(f)
        self._merge_checked(other, source=str(cfg_filename))

    def merge_from_other_cfg(self, cfg_other):
        """Merge another config node into this node, in place."""
        self._merge_checked(cfg_other, source="the merged config")

    def merge_from_list(self, cfg_list):
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` pairs (command-line overrides).

        Values are strings parsed with ``ast.literal_eval`` as in yacs, e.g.
        ``["MODEL.FCOS.NUM_CONVS", "2"]``.
        """
        self._check_mutable()
        if len(cfg_list) % 2:
            raise ValueError(
                "Config overrides must come in KEY VALUE pairs, got an odd number of items: {}".format(list(cfg_list))
            )
        widened = []
        for full_key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            if not self._has_key(full_key):
                self._raise_unknown(full_key, "the command-line overrides")
            widened += [full_key, _widen(self._decode_cfg_value(value), self._default_of(full_key))]
        super().merge_from_list(widened)

    # ------------------------------------------------------------------ #
    # internals
    # ------------------------------------------------------------------ #
    def _merge_checked(self, other, source):
        self._check_mutable()
        self._check_known_keys(other, self, [], source)
        _widen_tree(other, self)
        try:
            super().merge_from_other_cfg(other)
        except ValueError as err:
            # yacs's type-mismatch message already names the full key; add
            # where the value came from.
            raise ValueError("{} (in {})".format(err, source)) from err

    def _check_mutable(self):
        if self.is_frozen():
            raise AttributeError(
                "Cannot merge into a frozen config; call defrost() first "
                "or merge into cfg.clone()"
            )

    def _check_known_keys(self, other, node, key_list, source):
        """Raise on the first key of ``other`` that ``node`` does not define."""
        if not isinstance(other, dict):
            return  # a scalar where a group is expected: yacs reports the type
        for name, value in other.items():
            full_key = ".".join(key_list + [str(name)])
            if name in node:
                if isinstance(node[name], _YacsCfgNode):
                    self._check_known_keys(value, node[name], key_list + [name], source)
            elif not node.is_new_allowed() and not self._is_legacy(full_key):
                self._raise_unknown(full_key, source)

    def _is_legacy(self, full_key):
        # Deprecated keys are skipped and renamed keys raise inside yacs;
        # both have their own messages, so leave them to it.
        return self.key_is_deprecated(full_key) or self.key_is_renamed(full_key)

    def _default_of(self, full_key):
        node = self
        for part in full_key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def _has_key(self, full_key):
        node = self
        for part in full_key.split("."):
            if not isinstance(node, dict) or part not in node:
                return self._is_legacy(full_key)
            node = node[part]
        return True

    def _raise_unknown(self, full_key, source):
        msg = "Unknown config key '{}' in {}".format(full_key, source)
        suggestion = closest_key(full_key, _dotted_keys(self))
        if suggestion is not None:
            msg += "; did you mean '{}'?".format(suggestion)
        raise UnknownConfigKeyError(msg)


def _widen(value, default):
    """An int given for a float key becomes a float (``BASE_LR 1`` means 1.0); yacs would refuse it."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _widen_tree(other, node):
    """Apply :func:`_widen` in place to every leaf of ``other`` that ``node`` defines."""
    if not isinstance(other, dict) or not isinstance(node, dict):
        return
    for name in list(other.keys()):
        if name in node:
            if isinstance(other[name], dict):
                _widen_tree(other[name], node[name])
            else:
                other[name] = _widen(other[name], node[name])


_DEVICE_RE = re.compile(r"^(cpu|cuda)(:(\d+))?$")
# Device strings that have already produced the CPU-fallback warning, so a
# script that resolves the device in several places warns once.
_WARNED_FALLBACK = set()


def resolve_device(device_str):
    """Turn ``MODEL.DEVICE`` into a device string that works on this machine.

    Args:
        device_str (str): "cpu", "cuda" or "cuda:N".

    Returns:
        str: ``device_str`` unchanged when usable; "cpu" when a CUDA device
        is asked for but CUDA is not available (with a ``RuntimeWarning``,
        once per device string), so the same config runs on a laptop.

    Raises:
        ValueError: the string is not one of the forms above, or names a
            CUDA index this machine does not have.
    """
    import torch  # local import keeps ``fcos_core.config`` free of torch

    match = _DEVICE_RE.match(device_str) if isinstance(device_str, str) else None
    if match is None:
        raise ValueError(
            "MODEL.DEVICE must be 'cpu', 'cuda' or 'cuda:N', got {!r}".format(device_str)
        )
    kind, index = match.group(1), match.group(3)
    if kind == "cpu":
        if index is not None:
            raise ValueError(
                "MODEL.DEVICE {!r}: the CPU device takes no index".format(device_str)
            )
        return "cpu"
    if not torch.cuda.is_available():
        if device_str not in _WARNED_FALLBACK:
            _WARNED_FALLBACK.add(device_str)
            warnings.warn(
                "MODEL.DEVICE is {!r} but CUDA is not available; running on "
                "the CPU".format(device_str),
                RuntimeWarning,
                stacklevel=2,
            )
        return "cpu"
    if index is not None and int(index) >= torch.cuda.device_count():
        raise ValueError(
            "MODEL.DEVICE {!r}: this machine has {} CUDA device(s)".format(
                device_str, torch.cuda.device_count()
            )
        )
    return device_str
