"""What a long run shows while it works: a progress bar on terminals and its peak memory."""
import sys

import torch

from fcos_core.utils.comm import is_main_process


def peak_memory_mb(device):
    """Peak memory of this process in MiB: CUDA's allocator peak on a CUDA device, else the
    process's maximum resident set (``getrusage``; 0.0 where that is not available)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 1024.0 / 1024.0
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    except ImportError:  # pragma: no cover - not on Linux
        return 0.0


class Progress:
    """A tqdm bar from ``start`` to ``total`` on an interactive terminal (rank 0), nothing elsewhere
    (log files and CI get the logger's periodic lines instead)."""

    def __init__(self, start, total, desc="train"):
        self.bar = None
        if is_main_process() and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, leave=True)

    def update(self, text):
        """One step, with ``text`` shown after the bar."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
