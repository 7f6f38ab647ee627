"""Learning-rate schedules stepped once per iteration: warmup then multi-step or cosine decay."""
import math
from bisect import bisect_right

import torch


def warmup_factor_at(it, warmup_iters, warmup_factor, method):
    """Multiplier of the learning rate at iteration ``it`` during warmup (1 after it).

    "constant": ``warmup_factor`` throughout warmup; "linear": from ``warmup_factor`` at
    iteration 0 to 1 at ``warmup_iters`` (Goyal et al. 2017, as the original).
    """
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = float(it) / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ValueError(f"SOLVER.WARMUP_METHOD must be 'constant' or 'linear', got {method!r}")


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Warmup, then multiply by ``gamma`` at each milestone (the original's schedule)."""

    def __init__(self, optimizer, milestones, gamma=0.1, warmup_factor=1.0 / 3, warmup_iters=500,
                 warmup_method="linear", last_epoch=-1):
        if list(milestones) != sorted(milestones):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {milestones}")
        warmup_factor_at(0, 1, warmup_factor, warmup_method)  # validates the method early
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = warmup_factor_at(self.last_epoch, self.warmup_iters, self.warmup_factor, self.warmup_method)
        decay = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * factor * decay for base_lr in self.base_lrs]


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Warmup, then half a cosine from the base rate to 0 at ``max_iter`` (new; not in the original)."""

    def __init__(self, optimizer, max_iter, warmup_factor=1.0 / 3, warmup_iters=500, warmup_method="linear",
                 last_epoch=-1):
        if max_iter <= 0:
            raise ValueError(f"SOLVER.MAX_ITER must be positive for the cosine schedule, got {max_iter}")
        warmup_factor_at(0, 1, warmup_factor, warmup_method)
        self.max_iter = max_iter
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = warmup_factor_at(self.last_epoch, self.warmup_iters, self.warmup_factor, self.warmup_method)
        progress = min(self.last_epoch, self.max_iter) / self.max_iter
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return [base_lr * factor * cosine for base_lr in self.base_lrs]
