"""TensorBoard event files of a training run (losses, learning rate, AP, validation pictures), when
the optional ``tensorboard`` package is installed (``pip install -e .[tensorboard]``).

:func:`make_event_writer` returns a :class:`TensorBoardWriter` writing under
``OUTPUT_DIR/tensorboard`` (see it with ``tensorboard --logdir OUTPUT_DIR``), or, without the
package, in processes other than rank 0 or without an OUTPUT_DIR, an :class:`EventWriter` that
writes nothing; callers use both the same way.
"""
import logging
import os

import numpy as np

TENSORBOARD_DIR = "tensorboard"


class EventWriter:
    """Writes nothing: the stand-in when TensorBoard is off. ``enabled`` is False."""

    enabled = False
    log_dir = None

    def add_scalars(self, scalars, iteration):
        """Record ``scalars`` ({tag: float}, e.g. {"train/loss": 0.8}) at step ``iteration``."""

    def add_image(self, tag, image_bgr, iteration):
        """Record a picture (BGR uint8 [H, W, 3], as OpenCV and the visualizer use) at ``iteration``."""

    def flush(self):
        """Make what was recorded visible to a reader."""

    def close(self):
        """Flush and release the file."""


class TensorBoardWriter(EventWriter):
    """:class:`EventWriter` over ``torch.utils.tensorboard.SummaryWriter`` in ``log_dir``.

    ``purge_step``: on a resumed run, the first iteration trained again; TensorBoard hides the
    previous run's events from that step on, so that a killed run's tail is not drawn twice.
    """

    enabled = True

    def __init__(self, log_dir, purge_step=None):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self._writer = SummaryWriter(log_dir, purge_step=purge_step)

    def add_scalars(self, scalars, iteration):
        for tag, value in scalars.items():
            if value is not None and np.isfinite(float(value)):
                self._writer.add_scalar(tag, float(value), int(iteration))

    def add_image(self, tag, image_bgr, iteration):
        rgb = np.ascontiguousarray(np.asarray(image_bgr)[:, :, ::-1])
        self._writer.add_image(tag, rgb, int(iteration), dataformats="HWC")

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


def tensorboard_available():
    """True when ``torch.utils.tensorboard`` imports (it needs the ``tensorboard`` package)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def make_event_writer(output_dir, enabled=True, start_iter=0, logger=None):
    """The event writer of a run: TensorBoard files under ``<output_dir>/tensorboard`` when
    ``enabled`` (rank 0), ``output_dir`` is set and ``tensorboard`` is installed; else a writer
    that writes nothing (without the package, one info line says so).

    ``start_iter``: the iteration a resumed run starts from (0 for a fresh run).
    """
    logger = logger or logging.getLogger("fcos_core.trainer")
    if not enabled or not output_dir:
        return EventWriter()
    if not tensorboard_available():
        logger.info("TensorBoard event files are not written: the `tensorboard` package is not installed "
                    "(pip install tensorboard, or the project's [tensorboard] extra)")
        return EventWriter()
    log_dir = os.path.join(output_dir, TENSORBOARD_DIR)
    writer = TensorBoardWriter(log_dir, purge_step=start_iter + 1 if start_iter > 0 else None)
    logger.info("TensorBoard event files go to %s (tensorboard --logdir %s)", log_dir, output_dir)
    return writer
