"""Reading an image file as an RGB PIL image, the one way the datasets and the demo see pixels.

Conventions (tested in tests/data/test_image_io.py):

- **EXIF orientation is applied**: a JPEG stored landscape with EXIF Orientation 6 ("rotate 90
  clockwise to display") is returned portrait, as browsers, CVAT, Label Studio and detectron2's
  ``read_image`` show it (and as ``cv2.imread`` reads it). A COCO json's ``width``/``height`` and
  boxes then describe the displayed (rotated) image. :func:`read_image_for_size` handles a json
  written from the raw, unrotated pixels instead.
- **Grey** ("L", "1"), **palette** ("P") and CMYK images are converted to RGB by PIL (grey
  replicated into the three channels, the palette looked up).
- **Alpha is dropped** (RGBA, LA, palette with transparency): the colour channels are kept as stored,
  not composited over a background, as detectron2 (``convert("RGB")``), mmcv and OpenCV do; so
  the colour under a fully transparent pixel is what the model sees.
- **16-bit and 32-bit grey** ("I;16", "I;16B", "I", "F"): scaled linearly from the image's own
  [min, max] to [0, 255] (a constant image becomes 0), where PIL's ``convert("RGB")`` would turn
  every value above 255 white. 16-bit RGB PNGs are decoded by PIL to 8 bits per channel (high byte).
"""
import numpy as np
from PIL import Image, ImageOps

# what PIL raises for a missing, truncated or undecodable file
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # the orientations that transpose width and height
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def exif_orientation(img):
    """The EXIF Orientation (1..8) of PIL image ``img``; 1 (as stored) when absent or invalid."""
    try:
        value = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except (TypeError, ValueError, SyntaxError, OSError):
        return 1
    return value if 1 <= value <= 8 else 1


def displayed_size(size, orientation):
    """(width, height) of an image of stored ``size`` once its EXIF ``orientation`` is applied."""
    return (size[1], size[0]) if orientation in _SWAPS_AXES else tuple(size)


def to_rgb(img):
    """PIL image ``img`` in any mode -> an RGB PIL image (see the module docstring for the rules);
    ``img`` itself when it is RGB already."""
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(img, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns when a palette with transparency goes straight to RGB
    return img.convert("RGB")


def _decode(path):
    """The decoded PIL image at ``path`` (all pixels read, so a truncated file fails here)."""
    with Image.open(path) as img:
        img.load()
        return img


def _displayed(img, orientation):
    """``img`` turned as its EXIF ``orientation`` says (``img`` itself when 1)."""
    return img if orientation == 1 else ImageOps.exif_transpose(img)


def read_image(path):
    """The image at ``path`` as an RGB PIL image with its EXIF orientation applied.

    Raises:
        one of ``READ_ERRORS`` (FileNotFoundError, PIL.UnidentifiedImageError, ...) when the file
        is missing or cannot be decoded.
    """
    raw = _decode(path)
    return to_rgb(_displayed(raw, exif_orientation(raw)))


def read_image_for_size(path, size):
    """The image at ``path`` as RGB, in the frame whose (width, height) the annotations give as ``size``.

    The EXIF orientation is applied (see the module docstring), except when it swaps the axes and
    ``size`` is the stored, unrotated size: the annotations were then made on the raw pixels (by a
    tool that ignores EXIF), and the raw image is returned so that the boxes stay on their objects.

    Returns:
        (PIL.Image RGB, int): the image, and the EXIF orientation that was *not* applied (0 when the
        image is returned as displayed).

    Raises:
        one of ``READ_ERRORS``.
    """
    raw = _decode(path)
    orientation = exif_orientation(raw)
    size = tuple(int(v) for v in size)
    if orientation in _SWAPS_AXES and raw.size == size and displayed_size(raw.size, orientation) != size:
        return to_rgb(raw), orientation
    return to_rgb(_displayed(raw, orientation)), 0


def read_image_bgr(path):
    """The image at ``path`` as an OpenCV-style array: uint8 [H, W, 3], BGR (what ``cv2.imread`` gives,
    with this module's conventions for orientation, depth and alpha). Raises like :func:`read_image`."""
    return np.ascontiguousarray(np.asarray(read_image(path))[:, :, ::-1])
