#!/usr/bin/env python
"""Convert a detector checkpoint of torchvision, mmdetection or the original FCOS into ours.

    python tools/convert_checkpoint.py INPUT OUTPUT [--config-file F] [--report report.txt] [--trust-file]

Writes OUTPUT as ``{"model": state_dict, "categories": [...]}`` (class names where the source has
them) and prints a report: every tensor mapped, dropped or filled, the config keys the weights
need and the config file that has them. With ``--config-file`` the weights are also checked
against that config: its settings must be the ones they need, and its model must load them
strictly; otherwise nothing is written and the exit status is 1.

Files are loaded with ``torch.load(weights_only=True)``. mmdetection (mmengine) checkpoints may
hold other objects (in "meta", "message_hub"); ``--trust-file`` loads those with
``weights_only=False``, which runs code from the file: only for files from a source you trust.
The work is done by :mod:`fcos_core.engine.conversion` and :mod:`fcos_core.utils.formats`.
"""
import argparse
import pickle
import sys

from fcos_core.config import load_config
from fcos_core.engine.conversion import convert_file, result_lines
from fcos_core.utils.checkpoint import atomic_write_text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Convert a checkpoint of another library into ours")
    parser.add_argument("input", metavar="INPUT", help="checkpoint to convert (.pth, .pt, .pkl)")
    parser.add_argument("output", metavar="OUTPUT", help="file to write in our format")
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="check the weights against this config (needed settings, strict load)")
    parser.add_argument("--report", default="", metavar="FILE", help="also write the report to FILE")
    parser.add_argument("--trust-file", action="store_true",
                        help="load with torch.load(weights_only=False): runs code from the file, "
                             "only for files from a source you trust")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config_file, ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"]) if args.config_file else None
        result = convert_file(args.input, args.output, cfg=cfg, trust_file=args.trust_file)
    except (ValueError, KeyError, RuntimeError, OSError, pickle.UnpicklingError) as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 1
    text = "\n".join(result_lines(result, args.input, args.output, args.config_file)) + "\n"
    print(text, end="")
    if args.report:
        atomic_write_text(text, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
