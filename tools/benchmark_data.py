#!/usr/bin/env python
"""Benchmark the data pipeline at COCO size: one markdown table per registered row (fcos_core.benchmark.data).

Rows (``--only`` picks some; default all):

* ``dataset``: build time, memory per process (Pss and Private_Dirty growth from /proc/self/smaps_rollup,
  peak from VmHWM) and each DataLoader worker's Private_Dirty growth over one epoch of ``dataset[i]``,
  before (pycocotools-backed) and after (compact records), each in a fresh child process
  (fcos_core.benchmark.dataset_memory). Needs ``--ann-file``.
* ``coco_eval``: COCO evaluation of 5,000 images x 100 detections (``--eval-images``,
  ``--eval-detections``; seeded, made in memory) by pycocotools and by faster-coco-eval
  (TEST.COCO_EVAL_BACKEND), interleaved in one process: seconds, the ratio to pycocotools (goal at
  most 0.15) and the largest difference of the twelve numbers (fcos_core.benchmark.eval_backends).
* ``loader``: images/s of our training pipeline (image_io reading, build_transforms of
  fcos_imprv_R_50_FPN_1x) against torchvision's reference detection transforms on seeded 640 x 480
  JPEGs (``--loader-images-dir``, made on demand): in one process with 1 thread (time / the peer's)
  and through a DataLoader per ``--loader-workers`` (in total and per worker; goal at least 8
  images/s per rank with 4) (fcos_core.benchmark.loader; alone: ``python -m fcos_core.benchmark.loader``).

Example (the json from tools/make_coco_like.py)::

    python tools/make_coco_like.py /work/big/coco_like
    python tools/benchmark_data.py --only dataset --ann-file /work/big/coco_like/annotations.json \\
        --markdown out.md --json out.json
"""
import argparse
import sys

from fcos_core.benchmark.data import load_rows, machine_info, markdown, run_rows
from fcos_core.benchmark.report import write_outputs


def parse_args(argv=None):
    """The command line: the common options and each row's own."""
    rows = load_rows()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(rows), help="rows to run (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the markdown")
    for _, _, add_arguments in rows.values():
        if add_arguments:
            add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    """Run the rows asked for; print the markdown; write --json / --markdown; return the results."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    info = machine_info(argv)
    results = run_rows(args, args.only)
    text = markdown(info, results)
    write_outputs(text, {"info": info, "rows": results}, args.markdown, args.json)
    return results


if __name__ == "__main__":
    main()
