#!/usr/bin/env python
"""Look at a dataset before training on it, two jobs in one command:

1. pictures of the first --num samples as the model sees them (after the training transforms:
   resize, flip, colour changes), ground-truth boxes drawn with class names, as PNG files plus
   ``contact_sheet.png``;
2. a report from the annotations (report.txt, report.json, report.png): images and boxes per class,
   images without boxes, skipped annotations, object sizes at the training scale against the FPN
   levels of MODEL.FCOS.SIZES_OF_INTEREST, and warnings.

    python tools/browse_dataset.py --config-file F [--output DIR] [--num N] [--split train|test]
        [--no-report] [--check-images] [KEY VALUE ...]

``--num 0`` writes the report only. The work is done by :mod:`fcos_core.data.browse` and
:mod:`fcos_core.data.report`.
"""
import argparse
import os
import sys

from fcos_core.config import load_config
from fcos_core.data.browse import browse_from_config
from fcos_core.data.report import format_report, make_report, write_report
from fcos_core.utils.logger import setup_logger


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Draw the training ground truth and report on a dataset")
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a config file")
    parser.add_argument("--output", default="", metavar="DIR",
                        help="output folder (default: OUTPUT_DIR/browse_<split>)")
    parser.add_argument("--num", type=int, default=16, help="number of pictures (0: the report only)")
    parser.add_argument("--split", choices=("train", "test"), default="train",
                        help="DATASETS.TRAIN with the training transforms, or DATASETS.TEST with the test ones")
    parser.add_argument("--no-report", action="store_true", help="write the pictures only")
    parser.add_argument("--check-images", action="store_true",
                        help="decode every image to count the unreadable ones in the report")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.num < 0:
        raise SystemExit("--num must be 0 or more, got {}".format(args.num))
    cfg = load_config(args.config_file or None, args.opts or [])
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR or ".", "browse_" + args.split)
    logger = setup_logger("fcos_core", "", 0)
    if args.num > 0:
        paths, sheet = browse_from_config(cfg, out_dir, args.num, args.split)
        logger.info("Wrote %d pictures and %s", len(paths), sheet)
    if not args.no_report:
        report = make_report(cfg, args.split, check_images=args.check_images)
        print(format_report(report), end="")
        paths = write_report(report, out_dir)
        logger.info("Wrote %s, %s and %s", paths["txt"], paths["json"], paths["png"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
