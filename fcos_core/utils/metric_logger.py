"""Smoothed training statistics (losses, times) for the training log."""
from collections import defaultdict, deque

import torch


class SmoothedValue:
    """A window of recent values plus the running global average."""

    def __init__(self, window_size=20):
        self.deque = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    @property
    def latest(self):
        """The last value given to :meth:`update` (NaN before the first)."""
        return self.deque[-1] if self.deque else float("nan")

    def update(self, value):
        self.deque.append(value)
        self.count += 1
        self.total += value

    @property
    def median(self):
        return float(torch.tensor(list(self.deque)).median().item())

    @property
    def avg(self):
        return sum(self.deque) / max(len(self.deque), 1)

    @property
    def global_avg(self):
        return self.total / max(self.count, 1)


class MetricLogger:
    """Named :class:`SmoothedValue` meters; ``str()`` gives ``name: median (global avg)`` pairs."""

    def __init__(self, delimiter="  "):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for k, v in kwargs.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            if not isinstance(v, (float, int)):
                raise TypeError(f"meter {k!r} takes numbers, got {type(v).__name__}")
            self.meters[k].update(float(v))

    def __getattr__(self, attr):
        meters = self.__dict__.get("meters", {})
        if attr in meters:
            return meters[attr]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attr}'")

    def __str__(self):
        return self.delimiter.join(f"{name}: {m.median:.4f} ({m.global_avg:.4f})" for name, m in self.meters.items())
