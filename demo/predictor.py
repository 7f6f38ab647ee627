"""The demo scripts' helpers; :class:`COCODemo` itself lives in :mod:`fcos_core.engine.predictor`.

``from predictor import COCODemo`` (the original demo's import) keeps working: the class, its
transform, the COCO names and thresholds and the category / threshold file readers are
re-exported from the package, which the ``fcos`` command (:mod:`fcos_core.cli`) uses too.

The command-line helpers that ``fcos_demo.py`` and ``webcam.py`` share (arguments, display
detection, :func:`demo_from_args`) live in :mod:`fcos_core.engine.demo_cli`; they are re-exported here.
"""
from fcos_core.cli import is_config_key  # noqa: F401  (re-exported)
from fcos_core.engine.demo_cli import add_demo_arguments, demo_from_args, display_problem, show  # noqa: F401
from fcos_core.engine.predictor import (  # noqa: F401  (re-exported)
    COCO_CATEGORIES,
    COCO_THRESHOLDS_FOR_CLASSES,
    DEFAULT_THRESHOLD,
    COCODemo,
    DemoTransform,
    build_coco_demo,
    load_categories,
    load_thresholds_file,
    to_bgr_uint8,
)

__all__ = ["COCODemo", "DemoTransform", "COCO_CATEGORIES", "COCO_THRESHOLDS_FOR_CLASSES",
           "DEFAULT_THRESHOLD", "load_categories", "load_thresholds_file", "display_problem"]
