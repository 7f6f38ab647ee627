"""What a checkpoint conversion did, key by key, and what the converted weights need from the config.

Every converter in :mod:`fcos_core.utils.formats` returns ``(state_dict, ConversionReport)``: the state
dict under our detector's key names, and the report that ``tools/convert_checkpoint.py`` prints and the
checkpointer logs.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Tuple


@dataclass
class ConversionReport:
    """A conversion's record.

    Attributes:
        source: the library the file comes from ("torchvision", "mmdetection", "original", ...).
        mapped: (source key, our key) for every tensor carried over (same values, maybe reshaped or
            with rows selected; say so in ``notes``).
        dropped: (source key, why) for every source tensor left out.
        filled: (our key, how) for every tensor of ours the source does not have, made by the converter
            (for example "ones": a per-level Scale that the source model does not have).
        required_config: config keys (full dotted names) and the values the converted weights need,
            e.g. ``{"MODEL.RESNETS.STRIDE_IN_1X1": False}``; the checkpointer refuses a config that differs.
        suggested_config: the config file (relative to configs/) that has all of ``required_config``.
        notes: anything else a user should know (one line each).
    """

    source: str
    mapped: List[Tuple[str, str]] = field(default_factory=list)
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    filled: List[Tuple[str, str]] = field(default_factory=list)
    required_config: Dict[str, object] = field(default_factory=dict)
    suggested_config: str = ""
    notes: List[str] = field(default_factory=list)

    def summary(self):
        """One line: counts of mapped, dropped and filled tensors."""
        return "{}: {} tensors mapped, {} dropped, {} filled".format(
            self.source, len(self.mapped), len(self.dropped), len(self.filled))

    def lines(self):
        """The full report, one line per key (str lines, no trailing newline)."""
        out = [self.summary()]
        out += ["  mapped   {} -> {}".format(src, dst) for src, dst in self.mapped]
        out += ["  dropped  {} ({})".format(src, why) for src, why in self.dropped]
        out += ["  filled   {} ({})".format(dst, how) for dst, how in self.filled]
        out += ["  needs    {} {}".format(key, value) for key, value in self.required_config.items()]
        if self.suggested_config:
            out.append("  config   {}".format(self.suggested_config))
        out += ["  note     {}".format(note) for note in self.notes]
        return out


def config_mismatches(cfg, required):
    """The ``required`` keys whose value in ``cfg`` differs: list of (key, cfg value, required value).

    Lists and tuples compare element by element, floats within 1e-6.
    """
    bad = []
    for key, want in required.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if not _same(node, want):
            bad.append((key, node, want))
    return bad


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-6
        except (TypeError, ValueError):
            return False
    return a == b
