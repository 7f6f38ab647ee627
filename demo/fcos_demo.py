#!/usr/bin/env python
"""Detect objects in images with a trained FCOS and show or save the annotated images.

    python demo/fcos_demo.py [--config-file F] [--weights W] [--images-dir DIR | IMAGE ...]
        [--output DIR] [--min-image-size N] [--thresholds T[,T...] | --thresholds-file JSON]
        [--categories-from JSON] [KEY VALUE ...]

Without IMAGE arguments every image of ``--images-dir`` (default: demo/images) is used. The time
per image is printed. Results are shown in one window per image where a display exists, and
written under ``--output`` with the input file names; on a machine without a display ``--output``
is required. Trailing ``KEY VALUE`` pairs override the config (e.g. ``MODEL.DEVICE cpu``).

Model: ``--weights`` (path, URL or model-zoo name) and ``--config-file``; with neither,
torchvision's COCO FCOS ``fcos_resnet50_fpn_coco`` and its config (downloaded once, hash-checked;
offline, the error names the address and the path to put the file at). MODEL_ZOO.md lists the names.

Thresholds: the original demo's per-class COCO thresholds for a COCO model, else 0.5;
``--thresholds-file`` reads the ``thresholds.json`` that evaluation writes, and
``--categories-from`` names the classes of a model trained on another COCO-format dataset.
"""
import argparse
import os
import sys
import time

import cv2

from fcos_core.cli import split_inputs  # image paths, then KEY VALUE overrides
from fcos_core.data.datasets.image_io import READ_ERRORS, read_image_bgr
from fcos_core.engine.demo_cli import add_demo_arguments, demo_from_args, display_problem, show

DEMO_DIR = os.path.dirname(os.path.abspath(__file__))


def build_parser():
    """The command-line parser (positional IMAGE files, then optional KEY VALUE overrides)."""
    parser = argparse.ArgumentParser(description="FCOS demo on images")
    add_demo_arguments(parser, default_min_image_size=800)
    parser.add_argument("--images-dir", default=None, metavar="DIR",
                        help="folder of images (default: demo/images; ignored when IMAGE files are given)")
    parser.add_argument("inputs", nargs="*", metavar="IMAGE ... KEY VALUE",
                        help="image files, then config overrides (KEY VALUE pairs)")
    return parser


def image_paths(parser, images, images_dir):
    """The images to run on: the given files, or the files of ``images_dir`` (sorted by name)."""
    if images:
        missing = [p for p in images if not os.path.isfile(p)]
        if missing:
            parser.error("no such image file: {}".format(", ".join(missing)))
        return list(images)
    folder = images_dir or os.path.join(DEMO_DIR, "images")
    if not os.path.isdir(folder):
        parser.error("no images: pass IMAGE files or --images-dir DIR ({} is not a folder)".format(folder))
    paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        parser.error("no images in {}".format(folder))
    return paths


def run(demo, paths, output, window):
    """Annotate each readable image; print its time; write it under ``output`` and/or show it.

    Returns:
        int: the number of images processed.
    """
    done = 0
    for path in paths:
        name = os.path.basename(path)
        try:
            image = read_image_bgr(path)  # as the datasets read images (EXIF orientation applied)
        except READ_ERRORS as exc:
            print("{}\tskipped: not a readable image ({})".format(name, exc))
            continue
        start = time.time()
        composite = demo.run_on_opencv_image(image)
        print("{}\tinference time: {:.2f}s".format(name, time.time() - start), flush=True)
        if output and not cv2.imwrite(os.path.join(output, name), composite):
            raise SystemExit("error: could not write {}".format(os.path.join(output, name)))
        if window:
            show(name, composite)
        done += 1
    return done


def main(argv=None):
    """Parse arguments, check that results can be shown or saved, then run on every image."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    images, opts = split_inputs(args.inputs)
    problem = "--no-window was given" if args.no_window else display_problem()
    if problem and not args.output:
        parser.exit(2, "{}: error: cannot show the results: {}. Pass --output DIR to write the "
                       "annotated images instead.\n".format(parser.prog, problem))
    paths = image_paths(parser, images, args.images_dir)
    demo = demo_from_args(args, opts)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
    done = run(demo, paths, args.output, window=problem is None)
    if args.output:
        print("wrote {} annotated image(s) to {}".format(done, args.output))
    if problem is None and done:
        print("Press any key to exit ...")
        cv2.waitKey()
        cv2.destroyAllWindows()
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
