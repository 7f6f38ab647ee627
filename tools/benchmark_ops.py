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

Usage::

    python tools/benchmark_ops.py [--device cpu|cuda] [--threads N] [--repeat 21] [--json out.json]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

from fcos_core.layers import _extension
from fcos_core.layers.nms import ml_nms
from fcos_core.layers.sigmoid_focal_loss import sigmoid_focal_loss

NUM_CLASSES = 80
NMS_SIZES = (1000, 5000, 20000)
FOCAL_SIZES = ((20000, NUM_CLASSES), (20267, NUM_CLASSES))
IOU_THRESHOLD = 0.6
GAMMA, ALPHA = 2.0, 0.25


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=21, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser.parse_args()


def detections(n, device, seed):
    """Boxes [n, 4] xyxy with centres in an 800x1333 image, sides 10-300 px; distinct scores; labels 1..80."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * torch.tensor([1333.0, 800.0])
    sizes = torch.rand(n, 2, generator=g) * 290 + 10
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
    # Distinct scores in random order: torchvision's sort is not stable, so with ties its result
    # could legitimately differ from ours.
    scores = (torch.randperm(n, generator=g) + 1).float() / (n + 1)
    labels = torch.randint(1, NUM_CLASSES + 1, (n,), generator=g)
    return boxes.to(device), scores.to(device), labels.to(device)


def focal_inputs(n, c, device, seed):
    """Logits around the FCOS prior log(0.01/0.99); labels 0..C with ~1% positives."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) - 4.6
    labels = torch.randint(1, c + 1, (n,), generator=g)
    labels[torch.rand(n, generator=g) >= 0.01] = 0
    return logits.to(device), labels.to(device)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, device, repeat, warmup):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def extra_peak_bytes(fn, device):
    """Peak of the memory allocated by ``fn`` above what was allocated before it (see the docstring)."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    allocation = torch._C._profiler._EventType.Allocation
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == allocation and str(node.extra_fields.device) == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    running = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):  # frees are negative sizes
        running += size
        peak = max(peak, running)
    return peak


def bench_nms(args):
    rows = []
    for n in NMS_SIZES:
        boxes, scores, labels = detections(n, args.device, args.seed)
        ours_legacy = median_ms(lambda: ml_nms(boxes, scores, labels, IOU_THRESHOLD, legacy=True), args.device, args.repeat, args.warmup)
        ours_cont = median_ms(lambda: ml_nms(boxes, scores, labels, IOU_THRESHOLD, legacy=False), args.device, args.repeat, args.warmup)
        tv = median_ms(lambda: torchvision.ops.batched_nms(boxes, scores, labels, IOU_THRESHOLD), args.device, args.repeat, args.warmup)
        same = torch.equal(
            ml_nms(boxes, scores, labels, IOU_THRESHOLD, legacy=False),
            torchvision.ops.batched_nms(boxes, scores, labels, IOU_THRESHOLD),
        )
        rows.append(
            {
                "boxes": n,
                "classes": NUM_CLASSES,
                "ours_legacy_ms": ours_legacy,
                "ours_continuous_ms": ours_cont,
                "torchvision_ms": tv,
                "ratio_legacy": ours_legacy / tv,
                "ratio_continuous": ours_cont / tv,
                "continuous_equals_torchvision": same,
            }
        )
    return rows


def bench_focal(args):
    rows = []
    for n, c in FOCAL_SIZES:
        logits, labels = focal_inputs(n, c, args.device, args.seed)

        def ours():
            x = logits.detach().requires_grad_()
            sigmoid_focal_loss(x, labels, GAMMA, ALPHA).backward()
            return x.grad

        def tv():
            x = logits.detach().requires_grad_()
            targets = F.one_hot(labels, c + 1)[:, 1:].to(x.dtype)
            torchvision.ops.sigmoid_focal_loss(x, targets, alpha=ALPHA, gamma=GAMMA, reduction="sum").backward()
            return x.grad

        max_diff = (ours() - tv()).abs().max().item()
        t_ours = median_ms(ours, args.device, args.repeat, args.warmup)
        t_tv = median_ms(tv, args.device, args.repeat, args.warmup)
        m_ours = extra_peak_bytes(ours, args.device)
        m_tv = extra_peak_bytes(tv, args.device)
        rows.append(
            {
                "shape": f"{n}x{c}",
                "ours_ms": t_ours,
                "torchvision_ms": t_tv,
                "time_ratio": t_ours / t_tv,
                "ours_extra_peak_mib": m_ours / 2**20,
                "torchvision_extra_peak_mib": m_tv / 2**20,
                "memory_ratio": m_ours / m_tv if m_tv else float("nan"),
                "grad_max_abs_diff": max_diff,
            }
        )
    return rows


def markdown(info, nms_rows, focal_rows):
    lines = [
        f"Device: {info['device_name']}; threads: {info['threads']}; torch {info['torch']}, "
        f"torchvision {info['torchvision']}; backends: ml_nms {info['backend_ml_nms']}, "
        f"focal loss {info['backend_focal']}.",
        "",
        f"ml_nms vs torchvision.ops.batched_nms ({NUM_CLASSES} classes, IoU {IOU_THRESHOLD}; median ms; "
        "ratio = ours / torchvision, below 1 is faster):",
        "",
        "| boxes | ours legacy +1 | ours continuous | torchvision | ratio legacy | ratio continuous | continuous == torchvision |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in nms_rows:
        lines.append(
            f"| {r['boxes']:,} | {r['ours_legacy_ms']:.3f} | {r['ours_continuous_ms']:.3f} | {r['torchvision_ms']:.3f} "
            f"| {r['ratio_legacy']:.3f} | {r['ratio_continuous']:.3f} | {'yes' if r['continuous_equals_torchvision'] else 'NO'} |"
        )
    lines += [
        "",
        f"sigmoid focal loss forward + backward (gamma {GAMMA}, alpha {ALPHA}, sum) vs "
        "torchvision.ops.sigmoid_focal_loss (one-hot built inside its timing); median ms, extra peak MiB:",
        "",
        "| N x C | ours ms | torchvision ms | time ratio | ours extra peak | torchvision extra peak | memory ratio | max grad diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in focal_rows:
        lines.append(
            f"| {r['shape']} | {r['ours_ms']:.2f} | {r['torchvision_ms']:.2f} | {r['time_ratio']:.3f} "
            f"| {r['ours_extra_peak_mib']:.2f} | {r['torchvision_extra_peak_mib']:.2f} | {r['memory_ratio']:.3f} "
            f"| {r['grad_max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def main():
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is available")
    torch.set_num_threads(args.threads)
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "backend_ml_nms": _extension.backend("ml_nms", args.device),
        "backend_focal": _extension.backend("sigmoid_focal_loss_forward", args.device),
        "repeat": args.repeat,
        "warmup": args.warmup,
    }
    nms_rows = bench_nms(args)
    focal_rows = bench_focal(args)
    print(markdown(info, nms_rows, focal_rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "ml_nms": nms_rows, "sigmoid_focal_loss": focal_rows}, f, indent=2)


if __name__ == "__main__":
    main()
