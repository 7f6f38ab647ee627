"""The ``fcos`` command: detect objects in images and draw or list the detections (for testing).

    fcos IMAGE_OR_FOLDER... [--config-file F] [--weights W] [--output DIR] [--json]
         [--thresholds T[,T...] | --thresholds-file JSON] [--categories-from JSON] [--min-image-size N] [KEY VALUE ...]

Defaults to torchvision's COCO FCOS, model-zoo name ``fcos_resnet50_fpn_coco``
(configs/torchvision/fcos_resnet50_fpn_coco.yaml; the file, downloaded once into the torch hub cache,
is checked against the SHA-256 prefix in its name; see :mod:`fcos_core.utils.model_zoo` and
MODEL_ZOO.md). ``--weights`` takes a path, a URL or a model-zoo name; with a model-zoo name and no
``--config-file`` the name's config is used; with ``--config-file`` and no ``--weights``, the
config's MODEL.WEIGHT (:func:`model_and_config`). Offline, the command stops with one error naming
the download address and the path to put the file at. Each input image gets an
annotated copy ``DIR/<name>`` and, with ``--json``, ``DIR/<stem>.json``:
``{"image", "width", "height", "detections": [{"label", "category", "score", "box"}]}`` with
``box`` = ``[x1, y1, x2, y2]`` in pixels of the input image, highest score first. Only the
detections above the class thresholds are drawn and listed (COCO models: the original demo's
per-class thresholds; other models: 0.5). Class names: ``--categories-from`` when given, else those
saved in the checkpoint by tools/train_net.py, else COCO's for an 80-class model. Trailing
``KEY VALUE`` pairs override the config (``MODEL.DEVICE cpu``; ``MODEL.FCOS.NUM_CLASSES 0`` takes
the checkpoint's class count).
"""
import argparse
import json
import os
import re
import sys
import time

import cv2

from fcos_core.data.datasets.image_io import READ_ERRORS, read_image_bgr
from fcos_core.engine.predictor import build_coco_demo
from fcos_core.utils.model_zoo import get_config_file, model_zoo_config, model_zoo_name

# torchvision's COCO FCOS (MODEL_ZOO.md): the released model that can still be downloaded, with its hash
DEFAULT_MODEL = "fcos_resnet50_fpn_coco"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def is_config_key(token):
    """True for a dotted upper-case config key such as ``MODEL.DEVICE``."""
    return bool(_CONFIG_KEY.match(token))


def float_list(text):
    """"0.5" or "0.5,0.4,..." -> list of floats (an argparse type)."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated numbers, got {!r}".format(text))


def add_model_arguments(parser):
    """``--config-file`` and ``--weights``, as :func:`model_and_config` resolves them (the ``fcos``
    command and the demo scripts)."""
    parser.add_argument("--config-file", default=None, metavar="FILE",
                        help="config (a path, or a path under configs/: fcos/fcos_R_50_FPN_1x.yaml); "
                             "default: the config of --weights when that is a model-zoo name")
    parser.add_argument("--weights", default=None, metavar="W",
                        help="path, URL or model-zoo name (default: MODEL.WEIGHT of --config-file "
                             "when that is given, else {}, torchvision's COCO FCOS)".format(DEFAULT_MODEL))


def build_parser():
    """The ``fcos`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="fcos", description="Detect objects in images with FCOS and draw or list the detections "
        "(for testing). Trailing KEY VALUE pairs override the config.")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image files and folders of images, then optional config overrides")
    add_model_arguments(parser)
    parser.add_argument("--output", default="fcos_output", metavar="DIR",
                        help="folder for the annotated images and json files (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="also write the detections as DIR/<stem>.json")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--thresholds", type=float_list, default=None, metavar="T[,T...]",
                       help="minimum score: one value, or one per class")
    group.add_argument("--thresholds-file", default=None, metavar="JSON",
                       help="per-class thresholds: the thresholds.json that evaluation writes")
    parser.add_argument("--categories-from", default=None, metavar="JSON",
                        help="COCO json naming the classes (default: the names saved in the checkpoint, "
                             "else COCO's for 80 classes)")
    parser.add_argument("--min-image-size", type=int, default=0,
                        help="short side fed to the model, pixels (default: INPUT.MIN_SIZE_TEST)")
    parser.add_argument("--backend", default=None, choices=("pytorch", "onnxruntime", "openvino"),
                        help="what runs the model (TEST.BACKEND): the ONNX export under onnxruntime or "
                             "OpenVINO is made on first use and cached (default: the config's, pytorch)")
    return parser


def model_and_config(weights, config_file):
    """The weights and config file to run, from ``--weights`` / ``--config-file`` (None: not given).

    Neither: :data:`DEFAULT_MODEL` and its config. A model-zoo name alone, or a local copy of a zoo
    file under its published name (``fcos_resnet50_fpn_coco-99b0c9b7.pth``): its config. A config
    alone: weights None (the config's MODEL.WEIGHT is used). Returns ``(weights, config path)``, the
    path found as :func:`~fcos_core.utils.model_zoo.get_config_file` finds it.

    Raises:
        ValueError: ``weights`` is not a model-zoo name and there is no config file.
        FileNotFoundError: the config file does not exist.
    """
    if weights is None and config_file is None:
        weights = DEFAULT_MODEL
    if config_file is None:
        name = model_zoo_name(os.path.basename(weights) if os.path.isfile(weights) else weights)
        if name is None:
            raise ValueError("--config-file is needed when --weights is not a model-zoo name "
                             "(MODEL_ZOO.md lists the names)")
        config_file = model_zoo_config(name)
    return weights, get_config_file(config_file)


def split_inputs(tokens):
    """Positional tokens -> (image paths, config overrides): overrides start at the first config key."""
    for i, token in enumerate(tokens):
        if is_config_key(token):
            return tokens[:i], tokens[i:]
    return list(tokens), []


def expand_images(parser, inputs):
    """Files as given, folders as their image files (sorted by name, not recursive)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(n for n in os.listdir(item) if n.lower().endswith(IMAGE_EXTENSIONS))
            paths += [os.path.join(item, n) for n in names if os.path.isfile(os.path.join(item, n))]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            parser.error("no such file or folder: {}".format(item))
    if not paths:
        parser.error("no images in {}".format(", ".join(inputs)))
    return paths


def detections_as_dict(demo, predictions, path, image):
    """The json record of one image (see the module docstring)."""
    boxes = predictions.convert("xyxy").bbox.tolist()
    scores = predictions.get_field("scores").tolist()
    labels = predictions.get_field("labels").tolist()
    return {
        "image": path,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "detections": [
            {"label": int(label), "category": demo.categories[label], "score": round(score, 6),
             "box": [round(v, 2) for v in box]}
            for box, score, label in zip(boxes, scores, labels)
        ],
    }


def _unique_name(name, used):
    stem, ext = os.path.splitext(name)
    candidate, i = name, 1
    while candidate in used:
        candidate, i = "{}_{}{}".format(stem, i, ext), i + 1
    used.add(candidate)
    return candidate


def run(demo, paths, output, write_json):
    """Detect, draw and (optionally) list every image; returns the number of images done."""
    done, used = 0, set()
    for path in paths:
        try:
            image = read_image_bgr(path)  # as the datasets read images (EXIF orientation applied)
        except READ_ERRORS as exc:
            print("{}\tskipped: not a readable image ({})".format(path, exc), file=sys.stderr)
            continue
        start = time.time()
        predictions = demo.select_top_predictions(demo.compute_prediction(image))
        name = _unique_name(os.path.basename(path), used)
        drawn = demo.overlay(image.copy(), predictions)
        if not cv2.imwrite(os.path.join(output, name), drawn):
            raise SystemExit("error: could not write {}".format(os.path.join(output, name)))
        if write_json:
            record = detections_as_dict(demo, predictions, path, image)
            with open(os.path.join(output, os.path.splitext(name)[0] + ".json"), "w") as f:
                json.dump(record, f, indent=1)
        print("{}\t{} detections\t{:.2f}s".format(path, len(predictions), time.time() - start), flush=True)
        done += 1
    return done


def main(argv=None):
    """Entry point of the ``fcos`` console script."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    inputs, opts = split_inputs(args.inputs)
    opts += ["TEST.BACKEND", args.backend] if args.backend else []
    paths = expand_images(parser, inputs)
    try:
        weights, config_file = model_and_config(args.weights, args.config_file)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    try:
        demo = build_coco_demo(config_file, opts, weights=weights, thresholds=args.thresholds,
                               thresholds_file=args.thresholds_file, categories_from=args.categories_from, min_image_size=args.min_image_size or None)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:  # missing / corrupted weights, names that
        # do not fit, a TEST.BACKEND that is not installed or cannot run the graph
        parser.exit(1, "{}: error: {}\n".format(parser.prog, exc))
    os.makedirs(args.output, exist_ok=True)
    done = run(demo, paths, args.output, args.json)
    print("wrote {} annotated image(s){} to {}".format(done, " and json files" if args.json else "", args.output))
    return 0 if done == len(paths) else 1


if __name__ == "__main__":
    sys.exit(main())
