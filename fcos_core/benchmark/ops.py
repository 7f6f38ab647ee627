"""The ops benchmark: ``fcos_core.layers.ml_nms`` against ``torchvision.ops.batched_nms`` and our
sigmoid focal loss against ``torchvision.ops.sigmoid_focal_loss`` (see tools/benchmark_ops.py's
docstring for what is measured)."""
import argparse
import datetime
import os
import platform

import torch
import torch.nn.functional as F
import torchvision

from fcos_core.benchmark.memory import extra_peak_bytes
from fcos_core.benchmark.timing import median_ms
from fcos_core.layers import _extension
from fcos_core.layers.nms import ml_nms
from fcos_core.layers.sigmoid_focal_loss import sigmoid_focal_loss

NUM_CLASSES = 80
NMS_SIZES = (1000, 5000, 20000)
FOCAL_SIZES = ((20000, NUM_CLASSES), (20267, NUM_CLASSES))
IOU_THRESHOLD = 0.6
GAMMA, ALPHA = 2.0, 0.25


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


def bench_nms(args):
    """Rows of the NMS table: ``ml_nms`` (legacy and continuous) vs ``batched_nms`` per number of boxes."""
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
    """Rows of the focal-loss table: time and extra peak memory of forward + backward, ours vs torchvision."""
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


def ops_info(device, threads, repeat, warmup):
    """The ``info`` of tools/benchmark_ops.py's output: machine, versions, backends of the compiled ops."""
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine()),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "backend_ml_nms": _extension.backend("ml_nms", device),
        "backend_focal": _extension.backend("sigmoid_focal_loss_forward", device),
        "repeat": repeat,
        "warmup": warmup,
    }


def bench_ops(args):
    """(rows dict, note): the ``ops`` part of tools/benchmark.py, the ops benchmark run with its
    ``--device``, ``--threads``, ``--seed``, ``--warmup`` and max(``--runs``, 5) repeats."""
    ns = argparse.Namespace(device=args.device, threads=args.threads, repeat=max(args.runs, 5), warmup=args.warmup, seed=args.seed)
    rows = {"ml_nms": bench_nms(ns), "sigmoid_focal_loss": bench_focal(ns)}
    return rows, f"from fcos_core.benchmark.ops, as tools/benchmark_ops.py (its own timing: median of {ns.repeat} runs per op, not interleaved)"
