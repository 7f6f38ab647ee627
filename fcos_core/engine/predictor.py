"""Run a trained FCOS on OpenCV images and draw the detections (:class:`COCODemo`).

The class keeps the interface of the original FCOS / maskrcnn-benchmark demo: it is built from a
config (the model from ``cfg``, its weights from ``cfg.MODEL.WEIGHT``), takes BGR uint8 images as
returned by ``cv2.imread`` / ``cv2.VideoCapture`` and returns a copy with boxes and
"class: score" labels drawn on it. Detections are kept when their score exceeds a per-class
threshold (the original demo ships thresholds of best F-measure for COCO, reproduced here as
:data:`COCO_THRESHOLDS_FOR_CLASSES` in :mod:`fcos_core.engine.coco_classes`; ``tools/test_net.py`` writes the same kind of thresholds for
any COCO-format dataset into ``thresholds.json``).

:func:`build_coco_demo` builds one from a config file and the options of the demo scripts
(``demo/fcos_demo.py``, ``demo/webcam.py``) and of the ``fcos`` command (:mod:`fcos_core.cli`).

Deviations from the original demo, on purpose: the image goes through the test pipeline of
``fcos_core.data.transforms`` (RGB PIL image, Resize with ``INPUT.MAX_SIZE_TEST`` as cap, then
Normalize as in training) instead of a torchvision pipeline without the cap; masks and keypoints
are not supported (FCOS predicts boxes only).
"""
import json

import cv2
import numpy as np
import torch
from PIL import Image

from fcos_core.config import load_config, resolve_device
from fcos_core.data.transforms import inference_transforms, transform_image
from fcos_core.engine.classes import (
    category_names, load_categories, print_warning, resolve_num_classes_for_inference,
)
from fcos_core.engine.coco_classes import COCO_CATEGORIES, COCO_THRESHOLDS_FOR_CLASSES, DEFAULT_THRESHOLD
from fcos_core.engine.inference import make_inference_options, prepare_for_inference
from fcos_core.export.runtime import check_backend, make_backend_runner
from fcos_core.modeling.detector import build_detection_model
from fcos_core.structures import to_image_list
from fcos_core.utils.amp import autocast_context
from fcos_core.utils.checkpoint import CATEGORIES, DetectronCheckpointer
from fcos_core.utils.imagenet_zoo import TORCHVISION_PREFIX, imagenet_requirements
from fcos_core.utils.visualizer import class_color, draw_boxes, draw_detections, draw_labels, label_texts

__all__ = ["COCODemo", "DemoTransform", "COCO_CATEGORIES", "COCO_THRESHOLDS_FOR_CLASSES",
           "DEFAULT_THRESHOLD", "load_categories", "load_thresholds_file", "category_names",
           "build_coco_demo", "to_bgr_uint8", "is_untrained_weight"]


def to_bgr_uint8(image):
    """An OpenCV image as BGR uint8 [H, W, 3]: grayscale [H, W] / [H, W, 1] and BGRA are converted."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class DemoTransform(object):
    """BGR uint8 image [H, W, 3] (OpenCV) -> normalised float tensor [3, H', W'] for the model.

    The test pipeline (:func:`fcos_core.data.transforms.inference_transforms`) on the RGB PIL
    image: short side resized to ``min_size`` unless the long side would exceed ``max_size``, RGB
    0-1 tensor, ``Normalize`` (BGR 0-255 minus the mean when ``to_bgr255``, else RGB 0-1); with
    ``resize_style`` "torchvision" (INPUT.RESIZE_STYLE) the resize comes last, on the normalised
    tensor, as torchvision's detection models do it.
    """

    def __init__(self, min_size, max_size, pixel_mean, pixel_std, to_bgr255, resize_style="original"):
        self.transforms = inference_transforms(min_size, max_size, pixel_mean, pixel_std, to_bgr255, resize_style)

    def __call__(self, image):
        rgb = Image.fromarray(cv2.cvtColor(to_bgr_uint8(image), cv2.COLOR_BGR2RGB))
        return transform_image(self.transforms, rgb)

    def __repr__(self):
        return "{}({})".format(self.__class__.__name__, self.transforms)


class COCODemo(object):
    """An FCOS detector that draws its detections on OpenCV images.

    Arguments:
        cfg (CfgNode): the model's config; MODEL.WEIGHT is loaded, MODEL.DEVICE is used (CPU when
            CUDA is missing), INPUT.* gives the normalisation and the size cap, TEST.FUSE_FROZEN_BN,
            TEST.AMP and TEST.AMP_DTYPE how the model runs (``fcos_core.engine.inference``);
            TEST.BACKEND "onnxruntime" / "openvino" runs the model's cached ONNX export instead
            (``fcos_core.export.runtime``).
        confidence_thresholds_for_classes (float, sequence of C floats, Tensor[C] or None): a
            detection of label ``l`` is kept when its score > thresholds[l - 1]; a single float
            applies to all classes; None: :data:`COCO_THRESHOLDS_FOR_CLASSES` for the COCO
            categories, else :data:`DEFAULT_THRESHOLD`.
        show_mask_heatmaps, masks_per_dim: accepted for the original signature; FCOS predicts no
            masks, so ``show_mask_heatmaps=True`` raises ValueError.
        min_image_size (int or None): short side fed to the model, pixels (None:
            INPUT.MIN_SIZE_TEST); the long side is capped at INPUT.MAX_SIZE_TEST.
        categories (list[str] or None): names indexed by label, background first (C + 1 names,
            C = MODEL.FCOS.NUM_CLASSES - 1); None: the checkpoint's "categories", else
            ``default_names``, else :data:`COCO_CATEGORIES` for an 80-class model, else "class 1", ...
            (see :func:`fcos_core.engine.classes.category_names`).
        default_names (list[str] or None): names by label without the background (e.g. of a
            thresholds.json), used when neither ``categories`` nor the checkpoint name the classes.

    MODEL.FCOS.NUM_CLASSES 0 takes the class count of the checkpoint MODEL.WEIGHT.
    """

    CATEGORIES = COCO_CATEGORIES

    def __init__(self, cfg, confidence_thresholds_for_classes=None, show_mask_heatmaps=False,
                 masks_per_dim=2, min_image_size=224, categories=None, default_names=None):
        if show_mask_heatmaps:
            raise ValueError("show_mask_heatmaps: FCOS predicts boxes only, there are no masks to show")
        check_backend(cfg.TEST.BACKEND)  # a runtime that is not installed fails before the model loads
        self.cfg = cfg = resolve_num_classes_for_inference(cfg.clone(), cfg.MODEL.WEIGHT)
        num_classes = cfg.MODEL.FCOS.NUM_CLASSES - 1
        self.show_mask_heatmaps = show_mask_heatmaps
        self.masks_per_dim = masks_per_dim
        self.min_image_size = min_image_size if min_image_size else cfg.INPUT.MIN_SIZE_TEST

        self.device = torch.device(resolve_device(cfg.MODEL.DEVICE))
        self.cpu_device = torch.device("cpu")
        model = build_detection_model(self.cfg)
        model.eval()
        model.to(self.device)
        checkpointer = DetectronCheckpointer(self.cfg, model, save_dir=cfg.OUTPUT_DIR)
        extra = checkpointer.load(cfg.MODEL.WEIGHT, use_latest=False)
        self.categories = self._categories(categories, extra.get(CATEGORIES), default_names, num_classes)
        self.confidence_thresholds_for_classes = self._thresholds_tensor(
            confidence_thresholds_for_classes, num_classes)
        # TEST.FUSE_FROZEN_BN / TEST.AMP / TEST.AMP_DTYPE: self.model is the inference model (with
        # folded norms its state dict is not a checkpoint's; the demo never saves it)
        self.inference_options = make_inference_options(self.cfg, self.device)
        self.model = prepare_for_inference(model, self.inference_options.fuse_bn,
                                           self.inference_options.channels_last, self.inference_options.compile,
                                           self.inference_options.winograd)
        # TEST.BACKEND: the ONNX export under onnxruntime / OpenVINO replaces self.model (None: PyTorch)
        self.runner = make_backend_runner(self.cfg, cfg.MODEL.WEIGHT)

        self.transforms = self.build_transform()
        # multiplied by the label, modulo 255, to give each class its own colour

    @staticmethod
    def _categories(categories, checkpoint_names, default_names, num_classes):
        """The class names (background first): ``categories``, else as :func:`category_names` picks."""
        if categories is None:
            return category_names(num_classes, names=default_names, checkpoint_names=checkpoint_names)
        if len(categories) != num_classes + 1:
            raise ValueError(
                "{} category names (background included) for a model of {} classes "
                "(MODEL.FCOS.NUM_CLASSES {}); pass the dataset's categories (demo scripts: "
                "--categories-from instances.json)".format(len(categories), num_classes, num_classes + 1))
        return list(categories)

    def _thresholds_tensor(self, thresholds, num_classes):
        """``thresholds`` (see the class docstring) as a float Tensor [num_classes]."""
        if thresholds is None:
            if self.categories == COCO_CATEGORIES:
                thresholds = COCO_THRESHOLDS_FOR_CLASSES
            else:
                thresholds = DEFAULT_THRESHOLD
        thresholds = torch.as_tensor(thresholds, dtype=torch.float32).flatten()
        if thresholds.numel() == 1:
            return thresholds.expand(num_classes).clone()
        if thresholds.numel() != num_classes:
            raise ValueError("{} confidence thresholds for a model of {} classes; give one per class "
                             "or a single value".format(thresholds.numel(), num_classes))
        return thresholds

    def build_transform(self):
        """The :class:`DemoTransform` for this config and ``min_image_size``."""
        cfg = self.cfg
        return DemoTransform(self.min_image_size, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.PIXEL_MEAN,
                             cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255, cfg.INPUT.RESIZE_STYLE)

    def run_on_opencv_image(self, image):
        """Detect and draw.

        Arguments:
            image (np.ndarray): BGR uint8 [H, W, 3], as returned by OpenCV (not modified).

        Returns:
            np.ndarray: a copy of ``image`` with the selected detections drawn on it.
        """
        top_predictions = self.select_top_predictions(self.compute_prediction(image))
        return self.overlay(to_bgr_uint8(image).copy(), top_predictions)

    def compute_prediction(self, original_image):
        """All detections of the model (above MODEL.FCOS.INFERENCE_TH), before the demo thresholds.

        Arguments:
            original_image (np.ndarray): BGR uint8 [H, W, 3], as returned by OpenCV.

        Returns:
            BoxList: on the CPU, ``xyxy`` boxes in pixels of ``original_image`` (size (W, H)),
            fields "scores" [N] and "labels" [N] (1..C).
        """
        image = self.transforms(original_image)
        height, width = original_image.shape[:2]
        if self.runner is not None:
            return self.runner(to_image_list(image, self.cfg.DATALOADER.SIZE_DIVISIBILITY))[0].resize((width, height))
        image_list = to_image_list(image, self.cfg.DATALOADER.SIZE_DIVISIBILITY).to(self.device)
        if self.inference_options.channels_last:
            image_list.tensors = image_list.tensors.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast_context(self.device, self.inference_options.amp_dtype):
            predictions = self.model(image_list)
        prediction = predictions[0].to(self.cpu_device)
        return prediction.resize((width, height))

    def select_top_predictions(self, predictions):
        """The detections whose score exceeds their class's threshold, highest score first.

        Arguments:
            predictions (BoxList): with fields "scores" [N] and "labels" [N] (1..C).

        Returns:
            BoxList: a new BoxList with the kept boxes and fields.
        """
        scores = predictions.get_field("scores")
        labels = predictions.get_field("labels")
        thresholds = self.confidence_thresholds_for_classes[(labels - 1).long()]
        predictions = predictions[scores > thresholds]
        order = predictions.get_field("scores").argsort(descending=True)
        return predictions[order]

    def compute_colors_for_labels(self, labels):
        """A fixed colour per class: uint8 array [N, 3] (BGR) for labels Tensor [N]
        (:func:`fcos_core.utils.visualizer.class_color`)."""
        return np.array([class_color(v) for v in labels.tolist()], dtype=np.uint8).reshape(-1, 3)

    def overlay(self, image, predictions):
        """Draw boxes and "name score" labels of ``predictions`` on ``image`` in place (labels on a
        filled background, none covering another; :mod:`fcos_core.utils.visualizer`); returns it."""
        return draw_detections(image, predictions.convert("xyxy").bbox.numpy(),
                               predictions.get_field("labels").tolist(),
                               predictions.get_field("scores").tolist(), names=self.categories)

    def overlay_boxes(self, image, predictions):
        """Draw the ``xyxy`` boxes of ``predictions`` on ``image`` (BGR uint8) in place; returns it."""
        return draw_boxes(image, predictions.convert("xyxy").bbox.numpy(), predictions.get_field("labels").tolist())

    def overlay_class_names(self, image, predictions):
        """Write "name score" labels of ``predictions`` on ``image`` in place (in the given order,
        none covering another); returns it."""
        labels = predictions.get_field("labels").tolist()
        texts = label_texts(labels, predictions.get_field("scores").tolist(), self.categories)
        draw_labels(image, predictions.convert("xyxy").bbox.numpy(), labels, texts)
        return image


def load_thresholds_file(path, fallback=DEFAULT_THRESHOLD):
    """Per-class thresholds from the ``thresholds.json`` written by COCO evaluation.

    The file holds {"category_ids", "names", "thresholds", "f_measures"}, lists in label order.
    A negative threshold (class without ground truth in the evaluated set) becomes ``fallback``.

    Returns:
        (list[float], list[str] or None): thresholds indexed by label - 1, and the class names.
    """
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("thresholds"), list):
        raise ValueError("{}: expected a thresholds.json with a 'thresholds' list".format(path))
    thresholds = [float(t) if t is not None and float(t) >= 0 else fallback for t in data["thresholds"]]
    names = data.get("names")
    if names is not None and len(names) != len(thresholds):
        raise ValueError("{}: {} names for {} thresholds".format(path, len(names), len(thresholds)))
    return thresholds, names


def is_untrained_weight(weight):
    """True when MODEL.WEIGHT ``weight`` (str) leaves the detector untrained: empty, or ImageNet
    weights that initialise the backbone only (``catalog://ImageNetPretrained/...``,
    ``torchvision://<model>``, or a path / URL of one of torchvision's ImageNet files)."""
    weight = str(weight or "")
    if not weight or weight.startswith(("catalog://ImageNetPretrained", TORCHVISION_PREFIX)):
        return True
    return imagenet_requirements(weight) is not None


def build_coco_demo(config_file, opts=(), weights=None, thresholds=None, thresholds_file=None,
                    categories_from=None, min_image_size=None):
    """A :class:`COCODemo` from a config file and the demo scripts' options.

    Args:
        config_file (str): yaml config; ``opts`` are ``KEY VALUE`` overrides.
        weights (str or None): path, URL or model-zoo name; wins over MODEL.WEIGHT.
        thresholds (list[float] or None): one value for all classes or one per class.
        thresholds_file (str or None): a thresholds.json of an evaluation (wins over ``thresholds``).
        categories_from (str or None): a COCO json naming the classes; without it the checkpoint's
            "categories" name them (else the thresholds file's names, else COCO's for 80 classes).
        min_image_size (int or None): short side fed to the model (None or 0: INPUT.MIN_SIZE_TEST).
    """
    opts = list(opts) + (["MODEL.WEIGHT", weights] if weights else [])
    cfg = load_config(config_file, opts)
    weight = cfg.MODEL.WEIGHT
    if is_untrained_weight(weight):
        print_warning("MODEL.WEIGHT is {!r}: the detector is untrained; pass --weights model.pth".format(weight))
    names = None
    if thresholds_file:
        thresholds, names = load_thresholds_file(thresholds_file)
    elif isinstance(thresholds, (list, tuple)):
        thresholds = (thresholds[0] if len(thresholds) == 1 else thresholds) if thresholds else None
    cfg = resolve_num_classes_for_inference(cfg, weight)
    # checked here, where the file can be named in the message
    categories = category_names(cfg.MODEL.FCOS.NUM_CLASSES - 1, categories_from) if categories_from else None
    return COCODemo(cfg, confidence_thresholds_for_classes=thresholds, min_image_size=min_image_size,
                    categories=categories, default_names=names)
