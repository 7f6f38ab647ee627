#!/usr/bin/env python
"""Compare the final evaluations of several training runs in one markdown table.

    python tools/compare_runs.py output/aug_baseline output/aug_photometric output/aug_all \
        [--datasets shapes_val shapes_val_variant] [--metrics AP AP50] [--output table.md]

Each argument is an OUTPUT_DIR of tools/train_net.py whose DATASETS.TEST included the datasets
named. Columns: each dataset's metrics, the AP of each further dataset as a fraction of the first
one's, and the training time from log.txt. A run without an evaluation gets "n/a" and a note
naming the missing file (the exit status is then 1). The work is done by
:mod:`fcos_core.utils.run_summary`.
"""
import argparse
import sys

from fcos_core.utils.run_summary import format_table, summarize_runs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Compare the final evaluations of training runs")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="OUTPUT_DIRs of tools/train_net.py")
    parser.add_argument("--datasets", nargs="+", default=["shapes_val", "shapes_val_variant"],
                        help="names of DATASETS.TEST to show, the first one the reference")
    parser.add_argument("--metrics", nargs="+", default=["AP", "AP50"], help="COCO bbox metrics to show")
    parser.add_argument("--output", default="", metavar="FILE", help="also write the table to FILE")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = summarize_runs(args.runs, args.datasets, args.metrics)
    lines = format_table(rows, args.datasets, args.metrics)
    print("\n".join(lines))
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(lines) + "\n")
    missing = [message for row in rows for message in row["missing"]]
    for message in missing:
        print("note: " + message, file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
