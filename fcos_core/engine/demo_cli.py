"""Command-line helpers that the demo scripts (``demo/fcos_demo.py``, ``demo/webcam.py``) share:
the model / category / threshold arguments, the :class:`COCODemo` they describe, and the window
checks (whether ``cv2.imshow`` can work here, and a clear error when it cannot).

The model defaults as the ``fcos`` command's does (:func:`fcos_core.cli.model_and_config`):
torchvision's COCO FCOS (``fcos_resnet50_fpn_coco``) with its config when neither ``--weights`` nor
``--config-file`` is given."""
import os
import re
import sys

import cv2

from fcos_core.cli import add_model_arguments, float_list, model_and_config
from fcos_core.engine.predictor import build_coco_demo


def display_problem():
    """None when ``cv2.imshow`` can open a window here, else a sentence saying why it cannot."""
    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if gui is not None and gui.group(1).upper() == "NONE":
        return "this OpenCV build has no GUI support (e.g. opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (DISPLAY is not set)"
    return None


def add_demo_arguments(parser, default_min_image_size):
    """The model, category and threshold options common to the demo scripts."""
    add_model_arguments(parser)
    parser.add_argument("--min-image-size", type=int, default=default_min_image_size,
                        help="short side fed to the model, pixels (0: INPUT.MIN_SIZE_TEST); "
                             "the released models were trained with 800")
    parser.add_argument("--categories-from", default=None, metavar="JSON",
                        help="COCO json whose categories name the classes (default: the names saved "
                             "in the checkpoint, else COCO's for an 80-class model)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--thresholds", "--confidence-threshold", dest="thresholds", type=float_list,
                       default=None, metavar="T[,T...]",
                       help="minimum score: one value for all classes, or one per class, comma-separated")
    group.add_argument("--thresholds-file", default=None, metavar="JSON",
                       help="per-class thresholds: the thresholds.json of an evaluation "
                            "(OUTPUT_DIR/inference/<dataset>/thresholds.json)")
    parser.add_argument("--output", default=None, help="where to write the annotated result")
    parser.add_argument("--no-window", action="store_true", help="do not show the results in a window")


def demo_from_args(args, opts):
    """Config, categories and thresholds from parsed arguments -> :class:`COCODemo`.

    ``opts`` are the ``KEY VALUE`` config overrides; ``--weights`` wins over MODEL.WEIGHT.

    Raises:
        SystemExit: a config or weights that cannot be had (missing, offline, wrong hash), or class
            names / thresholds that do not fit: one line naming the file, the address or the key.
    """
    try:
        weights, config_file = model_and_config(args.weights, args.config_file)
        return build_coco_demo(config_file, opts, weights=weights, thresholds=args.thresholds,
                               thresholds_file=args.thresholds_file, categories_from=args.categories_from,
                               min_image_size=args.min_image_size)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:  # OSError, ImportError: TEST.BACKEND's
        raise SystemExit("error: {}".format(exc)) from None


def show(window, image):
    """``cv2.imshow`` that turns OpenCV's GUI error into a message asking for ``--output``."""
    try:
        cv2.imshow(window, image)
    except cv2.error as exc:
        raise SystemExit("error: cannot open a window ({}); pass --output to write the results "
                         "to files instead".format(str(exc).strip().splitlines()[-1])) from exc

