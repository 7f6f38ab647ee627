"""Bad-data bookkeeping shared by the datasets of this package.

Bad data never stops a run and is never silent: each annotation, image or file that a dataset cannot
use is named in a ``logging`` warning (once; at most ``SkipLog.MAX_MESSAGES`` per reason, then a
count) and counted. :func:`data_skip_counts` returns the counts so a trainer can log them.
"""
import logging
from collections import Counter

import torch

from .image_io import READ_ERRORS, read_image

logger = logging.getLogger(__name__)


class SkipLog:
    """Counts what a dataset skips, by reason, and warns about each item (up to a limit).

    Arguments:
        owner (str): names the dataset in the messages (e.g. its annotation file).
    """

    MAX_MESSAGES = 20  # per reason; past that only the final summary counts them

    def __init__(self, owner):
        self.owner = owner
        self.counts = Counter()

    def skip(self, reason, message, *args):
        """Count one item under ``reason`` and warn with ``message % args`` (prefixed by the owner)."""
        self.counts[reason] += 1
        if self.counts[reason] <= self.MAX_MESSAGES:
            logger.warning("%s: " + message, self.owner, *args)
        if self.counts[reason] == self.MAX_MESSAGES:
            logger.warning("%s: further '%s' messages are not shown, only counted", self.owner, reason)

    def summarize(self):
        """One warning with all the counts, if anything was skipped."""
        if self.counts:
            logger.warning("%s: skipped %s", self.owner, dict(sorted(self.counts.items())))


class ImageFailures:
    """Per-image flags (unreadable, size mismatch, EXIF orientation not applied) shared by the
    DataLoader worker processes and the main process.

    The flags live in a shared-memory tensor, so an image that failed in one worker is skipped (and
    not reported again) by the others, and the main process can count the failures.

    Arguments:
        num_images (int): number of images of the dataset.
    """

    UNREADABLE = 1
    SIZE_MISMATCH = 2
    EXIF_NOT_APPLIED = 3
    NAMES = {UNREADABLE: "unreadable_image", SIZE_MISMATCH: "image_size_mismatch",
             EXIF_NOT_APPLIED: "exif_orientation_not_applied"}

    def __init__(self, num_images):
        self.flags = torch.zeros(num_images, dtype=torch.uint8).share_memory_()

    def is_unreadable(self, index):
        return int(self.flags[index]) == self.UNREADABLE

    def mark(self, index, flag):
        """Set ``flag`` on image ``index``; True if it was not set before (report it then)."""
        if int(self.flags[index]) == flag:
            return False
        self.flags[index] = flag
        return True

    def counts(self):
        """Counter {"unreadable_image": n, "image_size_mismatch": m, ...} of the flags set so far."""
        out = Counter({name: int((self.flags == flag).sum()) for flag, name in self.NAMES.items()})
        return +out  # drop zero counts


def load_rgb_image(path):
    """The image at ``path`` as a decoded RGB PIL image (conventions of
    :mod:`~fcos_core.data.datasets.image_io`: EXIF orientation applied), or the exception that
    prevented it."""
    try:
        return read_image(path)
    except READ_ERRORS as e:
        return e


def next_readable_sample(dataset, index, read):
    """``read(i)`` for the first ``i`` from ``index`` on (wrapping) whose image can be read.

    ``read(i)`` returns a sample or None when image ``i`` is unreadable (it reports that itself).
    A long run then goes on with another image instead of stopping.

    Raises:
        RuntimeError: no image of the dataset can be read.
    """
    for offset in range(len(dataset)):
        i = (index + offset) % len(dataset)
        if dataset.failures.is_unreadable(i):
            continue
        sample = read(i)
        if sample is not None:
            return sample
    raise RuntimeError("{}: none of its {} images can be read".format(type(dataset).__name__, len(dataset)))


def data_skip_counts(dataset):
    """Counter of what ``dataset`` skipped so far, by reason (empty for datasets that do not count).

    Reasons: annotations (``bad_box``, ``empty_box``, ``too_small``, ``outside_image``,
    ``unknown_category``, ``unknown_image``, ``bad_annotation``), boxes clipped to the image
    (``clipped``), images (``image_without_size``, ``unreadable_image``, ``image_size_mismatch``,
    ``exif_orientation_not_applied``, ``bad_annotation_file``). Works through :class:`ConcatDataset` (sums).
    """
    skipped = getattr(dataset, "skipped", None)
    return Counter(skipped) if skipped is not None else Counter()


def clip_box(box, width, height, skips, what):
    """A pixel-inclusive xyxy ``box`` clipped to a width x height image, or None if unusable.

    Reports through ``skips`` (a SkipLog): boxes outside the image or at most one pixel wide/high are
    skipped; boxes clipped by more than a pixel are kept but reported ("clipped"). ``what`` names
    the box in messages.
    """
    x1, y1, x2, y2 = box
    cx1, cx2 = min(max(x1, 0.0), width - 1.0), min(max(x2, 0.0), width - 1.0)
    cy1, cy2 = min(max(y1, 0.0), height - 1.0), min(max(y2, 0.0), height - 1.0)
    if cx2 <= cx1 or cy2 <= cy1:
        if x2 > x1 and y2 > y1:
            skips.skip("outside_image", "%s: box %s lies outside the %dx%d image; dropped", what,
                       [round(v, 2) for v in box], width, height)
        else:
            # same rule as BoxList.clip_to_image(remove_empty=True): a box needs x2 > x1, y2 > y1
            skips.skip("too_small", "%s: box %s is at most 1 pixel wide or high; dropped", what,
                       [round(v, 2) for v in box])
        return None
    if max(abs(cx1 - x1), abs(cy1 - y1), abs(cx2 - x2), abs(cy2 - y2)) > 1.0:
        skips.skip("clipped", "%s: box %s exceeds the %dx%d image; clipped to it", what,
                   [round(v, 2) for v in box], width, height)
    return [cx1, cy1, cx2, cy2]
