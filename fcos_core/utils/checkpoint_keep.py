"""Keep only the last N periodic checkpoints of a training (SOLVER.CHECKPOINT_KEEP).

A long COCO run writes a ``model_XXXXXXX.pth`` every SOLVER.CHECKPOINT_PERIOD iterations (90k / 2.5k
= 36 files of ~250 MB for R-50). :func:`prune_checkpoints` deletes the older periodic ones, and only
when it is safe: it runs after the newest has been written atomically
(:func:`fcos_core.utils.checkpoint.atomic_torch_save`) and ``last_checkpoint`` names it; the file
``last_checkpoint`` names is never deleted, nor any other file (model_final, model_best,
model_last_good, files of the user's own).
"""
import logging
import os
import re

from fcos_core.utils.checkpoint import LAST_CHECKPOINT

PERIODIC = re.compile(r"^model_(\d{7,})\.pth$")  # the trainer's model_{iteration:07d}.pth


def periodic_checkpoints(save_dir):
    """The periodic checkpoints in ``save_dir`` as (iteration, path), oldest (lowest iteration) first."""
    found = []
    for name in os.listdir(save_dir):
        match = PERIODIC.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(save_dir, name)))
    return sorted(found)


def _named_by_last_checkpoint(save_dir):
    """The absolute path ``save_dir/last_checkpoint`` names, or None when it is missing or empty."""
    try:
        with open(os.path.join(save_dir, LAST_CHECKPOINT)) as f:
            name = f.read().strip()
    except OSError:
        return None
    return os.path.abspath(os.path.join(save_dir, name)) if name else None


def _fsync_dir(path):
    """Make the renames in folder ``path`` durable (the new checkpoint and last_checkpoint) before
    anything is deleted; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prune_checkpoints(save_dir, keep, logger=None):
    """Delete all but the ``keep`` newest periodic checkpoints of ``save_dir`` (``keep`` <= 0: none).

    Nothing is deleted unless ``last_checkpoint`` names an existing periodic checkpoint among the
    ``keep`` newest (i.e. the state to resume from has been written); that file is never deleted.

    Returns:
        list[str]: the deleted paths.
    """
    if keep <= 0:
        return []
    logger = logger or logging.getLogger(__name__)
    found = periodic_checkpoints(save_dir)
    last = _named_by_last_checkpoint(save_dir)
    kept = {os.path.abspath(path) for _, path in found[-keep:]}
    if last is None or last not in kept or not os.path.exists(last):
        logger.warning("Not deleting old checkpoints in %s: %s names %s, not one of the %d newest periodic ones",
                       save_dir, LAST_CHECKPOINT, last, keep)
        return []
    _fsync_dir(save_dir)
    deleted = []
    for _, path in found[:-keep]:
        if os.path.abspath(path) == last:
            continue
        os.remove(path)
        deleted.append(path)
    if deleted:
        logger.info("Deleted %d old checkpoint(s) (SOLVER.CHECKPOINT_KEEP %d): %s", len(deleted), keep,
                    ", ".join(os.path.basename(p) for p in deleted))
    return deleted
