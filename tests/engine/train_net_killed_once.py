"""tools/train_net.py with one rank that SIGKILLs itself once, right after a given checkpoint: the entry
point of tests/engine/test_fault_restart.py under ``torchrun --max-restarts 1`` (not a test module).

FCOS_TEST_KILL_AFTER names the checkpoint (e.g. ``model_0000004``); once every rank has passed its
save (a barrier: rank 0 has written the file and last_checkpoint), rank FCOS_TEST_KILL_RANK kills
itself with SIGKILL, as an out-of-memory kill or a lost node would, unless the marker file
FCOS_TEST_KILL_MARKER exists; it creates the marker first, so the restarted group trains on.
The library is not changed: the hook wraps ``Checkpointer.save`` in this process only.
"""
import os
import runpy
import signal
import sys
from pathlib import Path

import torch

from fcos_core.utils.checkpoint import Checkpointer

_save = Checkpointer.save


def _save_then_maybe_die(self, name, *args, **kwargs):
    path = _save(self, name, *args, **kwargs)
    if name == os.environ["FCOS_TEST_KILL_AFTER"]:
        torch.distributed.barrier()
        marker = Path(os.environ["FCOS_TEST_KILL_MARKER"])
        if torch.distributed.get_rank() == int(os.environ["FCOS_TEST_KILL_RANK"]) and not marker.exists():
            marker.write_text(f"rank {torch.distributed.get_rank()} pid {os.getpid()} killed after {name}\n")
            os.kill(os.getpid(), signal.SIGKILL)
    return path


if __name__ == "__main__":
    Checkpointer.save = _save_then_maybe_die
    script = Path(__file__).resolve().parents[2] / "tools" / "train_net.py"
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")
