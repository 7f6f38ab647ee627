#!/usr/bin/env python
"""Benchmark the compiled ops of fcos_core against torchvision, in one process.

Measured, on one device and with one thread count for both sides (``--threads``, default all
cores, applied with ``torch.set_num_threads``):

* class-aware NMS: ``fcos_core.layers.ml_nms`` in both modes (``legacy=True``, the +1 widths of the
  original FCOS, and ``legacy=False``, the continuous convention) against
  ``torchvision.ops.batched_nms`` (always continuous) on 1,000 / 5,000 / 20,000 boxes of 80
  classes: random centres in an 800x1333 image, sides 10-300 px, random distinct scores, IoU 0.6 (FCOS
  NMS_TH). The table also says whether our continuous result equals torchvision's.
* sigmoid focal loss forward + backward (alpha 0.25, gamma 2, sum) of ``fcos_core.layers.
  sigmoid_focal_loss`` against ``torchvision.ops.sigmoid_focal_loss(reduction="sum")`` on 20,000 x 80
  and 20,267 x 80 logits (the number of locations of FCOS R-50 on an 800x1333 image), about 1% of
  rows positive. torchvision needs one-hot targets; building them from the labels is inside its
  timed region, since FCOS has labels.

Times are the median of ``--repeat`` runs after ``--warmup`` runs (CUDA runs are synchronised).

Extra peak memory is the peak, above what was allocated before the call, of the memory the op's
own allocations hold (inputs excluded, outputs and the logits gradient included):

* CPU: the call runs under ``torch.profiler.profile(profile_memory=True)``, which records every
  allocation and free of the CPU allocator as an ``Allocation`` event with its signed size (read
  from the profiler's event tree); the running sum of those sizes in time order peaks at the extra
  peak memory;
* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
  ``torch.cuda.memory_allocated()`` before the call.

The benchmarks are fcos_core.benchmark.ops's (tables: fcos_core.benchmark.report.ops_markdown).

Usage::

    python tools/benchmark_ops.py [--device cpu|cuda] [--threads N] [--repeat 21] [--json out.json]
"""
import argparse
import json
import os

import torch

from fcos_core.benchmark.ops import bench_focal, bench_nms, ops_info
from fcos_core.benchmark.report import ops_markdown


def parse_args(argv=None):
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=21, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser.parse_args(argv)


def main(argv=None):
    """Run both benchmarks; print the markdown, write --json; return the results."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is available")
    torch.set_num_threads(args.threads)
    info = ops_info(args.device, torch.get_num_threads(), args.repeat, args.warmup)
    nms_rows = bench_nms(args)
    focal_rows = bench_focal(args)
    print(ops_markdown(info, nms_rows, focal_rows))
    result = {"info": info, "ml_nms": nms_rows, "sigmoid_focal_loss": focal_rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
