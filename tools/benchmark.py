#!/usr/bin/env python
"""Benchmark FCOS (this codebase) against torchvision's detectors, as ratios measured in one process.

Parts (``--only`` runs one of them; by default the first three, and ``accuracy`` too when
``--weights`` is given):

* ``inference``: time per image, eval mode, ``torch.inference_mode``, batch 1, one image of
  ``--size H W`` (default 800 x 1333), no data loading. Ours: ``fcos_R_50_FPN_1x`` (backbone, head
  and the full post-processing with the config's INFERENCE_TH 0.05, PRE_NMS_TOP_N 1000, NMS_TH
  0.6, 100 detections) on an already normalised tensor (BGR 0-255 minus PIXEL_MEAN), prepared as
  tools/test_net.py prepares it (TEST.FUSE_FROZEN_BN: the backbone's FrozenBatchNorm2d folded into
  the convs; torchvision keeps its FrozenBatchNorm2d layers, it has no such option; weights and
  input in channels_last, SOLVER.CHANNELS_LAST, on by default; torchvision in its default NCHW). torchvision:
  ``fcos_resnet50_fpn``, ``retinanet_resnet50_fpn`` and ``fasterrcnn_resnet50_fpn`` called on a list
  of one [3, H, W] tensor in [0, 1] (the same image) with ``transform.min_size = (min(H, W),)`` and
  ``transform.max_size = max(H, W)`` so that their transform does not change the size; their time
  INCLUDES that ``GeneralizedRCNNTransform`` (normalisation, an identity-scale resize, padding),
  which is also timed alone in its own row.
  A second precision is timed where it is fast: on CUDA "amp" (float16 autocast for every model);
  on a CPU with native bfloat16 (``fcos_core.utils.env.cpu_has_fast_bf16``: AVX-512 BF16 or AMX)
  "bf16": ours as tools/test_net.py runs it with TEST.AMP True (``make_inference_options``,
  ``prepare_for_inference`` and ``forward_for_inference`` of fcos_core.engine.inference: bfloat16
  autocast, folded batch norms, channels_last weights and input), torchvision's detectors (and
  transform) under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with channels_last weights. On
  other CPUs the bf16 rows are skipped, with a line saying why. A summary line gives ours in that
  precision / torchvision FCOS in fp32 (the goal for bf16: at most 0.3x) and / ours in fp32.
* ``train``: one training step (forward with losses, backward, SGD step with momentum 0.9, weight
  decay 1e-4), batch 2 of one size, 3-5 random boxes per image; ours vs torchvision FCOS and
  RetinaNet. Ours runs as tools/train_net.py runs it: model and batched images in channels_last
  (SOLVER.CHANNELS_LAST, the default), frozen batch norms folded into the convolutions
  (``fcos_core.layers.batch_norm.conv_then_norm``); torchvision as its builders make it. Peak memory is measured in a child process per model (this script with the hidden
  ``--child`` flag) after one warm-up step: on CPU the peak of allocated tensor memory during one
  step above what was allocated before it (``torch.profiler`` with ``profile_memory=True``: the
  running sum of its allocation and free events), plus the tensors held between steps (parameters,
  buffers, momentum) and the child's peak resident set size (VmHWM); on CUDA
  ``torch.cuda.max_memory_allocated``.
* ``ops``: ``ml_nms`` vs ``torchvision.ops.batched_nms`` and the sigmoid focal loss vs
  ``torchvision.ops.sigmoid_focal_loss``, through ``tools/benchmark_ops.py`` (skipped with a note
  if it is missing or its API is not the expected one).
* ``accuracy`` (needs ``--weights PATH``, a model trained with ``--accuracy-config``, default
  configs/quickstart/fcos_shapes.yaml, e.g. output/quickstart/model_final.pth): COCO AP on the
  config's DATASETS.TEST (shapes_val) in fp32 and with TEST.AMP True (bfloat16 on a CPU, float16 on
  CUDA), each evaluated as tools/test_net.py evaluates it (its ``load_model_for_test``, then
  tools/train_net.py's ``run_test``), and the difference in AP points (the goal: within 0.5).

Fairness (the same for every model):

* same thread count (``--threads``, default ``torch.get_num_threads()``), same process, same image;
* interleaved: each round runs every model once (A B C D A B C D ...); ``--warmup`` rounds are
  discarded, the median of ``--runs`` rounds is reported; ratios are ours / theirs (below 1: ours
  is faster / smaller): the ratio of the medians, and the median over rounds of the ratio within
  a round ("per round"), which is less sensitive to load that changes between rounds;
* torchvision models are built with ``weights=None, weights_backbone=None`` and then given the
  backbone configuration their builders use with an ImageNet backbone (as ours has): BatchNorm
  replaced by ``FrozenBatchNorm2d``, stem and ``layer1`` frozen (3 trainable layers, like our
  FREEZE_CONV_BODY_AT 2). FCOS and RetinaNet predict 80 classes, Faster R-CNN 80 + background;
* inference weights: torchvision FCOS's random weights are mapped into ours (same keys as the
  released checkpoints), so both FCOS models have the same weights except the classification bias.
  Random weights make post-processing either trivial (no score above the threshold) or
  pathological, so each model's classifier is calibrated on the benchmark image so that
  ``--candidate-fraction`` (default 1%) of its (location or anchor or proposal, class) scores pass
  its own score threshold: ours sigmoid(cls) > 0.05; torchvision FCOS sqrt(sigmoid(cls) *
  sigmoid(centerness)) > 0.2; RetinaNet sigmoid(cls) > 0.05 (by shifting the classification bias);
  Faster R-CNN softmax foreground probability > 0.05 (by scaling its class logits). The number of
  scores above threshold and the final detections are reported per model.

Examples::

    python tools/benchmark.py --only inference                       # 800 x 1333, 5 runs
    python tools/benchmark.py --only train --size 512 672 --runs 3
    python tools/benchmark.py --size 320 480 --runs 3 --json out.json --markdown out.md
    python tools/benchmark.py --only accuracy --weights output/quickstart/model_final.pth
"""
import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections import OrderedDict

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

from fcos_core.utils import env as fcos_env  # noqa: E402
from fcos_core.utils.imagenet_weights import torchvision_fcos_to_detector  # noqa: E402

OURS_CONFIG = "fcos_R_50_FPN_1x.yaml"
ACCURACY_CONFIG = os.path.join("configs", "quickstart", "fcos_shapes.yaml")
ACCURACY_GOAL_POINTS = 0.5  # issue 7: reduced-precision AP within 0.5 points of fp32
COCO_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
OURS = "ours fcos_R_50_FPN_1x"
TV_FCOS = "torchvision fcos_resnet50_fpn"
TV_RETINANET = "torchvision retinanet_resnet50_fpn"
TV_FASTERRCNN = "torchvision fasterrcnn_resnet50_fpn"
TV_TRANSFORM = "torchvision GeneralizedRCNNTransform alone"
INFERENCE_MODELS = (OURS, TV_FCOS, TV_RETINANET, TV_FASTERRCNN)
TRAIN_MODELS = (OURS, TV_FCOS, TV_RETINANET)
NUM_CLASSES = 80
SGD = dict(lr=0.01, momentum=0.9, weight_decay=1e-4)


# --------------------------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads, for every model")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[800, 1333], help="image size (default 800 1333)")
    parser.add_argument("--runs", type=int, default=5, help="timed interleaved rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds before timing")
    parser.add_argument("--only", choices=["inference", "train", "ops", "accuracy"], help="run one part only")
    parser.add_argument("--candidate-fraction", type=float, default=0.01, help="fraction of class scores above threshold (inference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torchvision-channels-last", action="store_true",
                        help="inference: torchvision's detectors in channels_last in fp32 too (a fairness check: ours "
                             "runs channels_last by default; by default torchvision runs in its own NCHW)")
    parser.add_argument("--no-memory", action="store_true", help="train: skip the per-model peak-memory child processes")
    parser.add_argument("--weights", metavar="PATH", help="accuracy: a trained model (e.g. output/quickstart/model_final.pth)")
    parser.add_argument("--accuracy-config", metavar="FILE", default=ACCURACY_CONFIG,
                        help="accuracy: the config the model was trained with (default %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the markdown table")
    parser.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)  # internal: peak memory of one model
    args = parser.parse_args(argv)
    if args.only == "accuracy" and not args.weights:
        parser.error("--only accuracy needs --weights PATH (a model trained with --accuracy-config)")
    return args


# --------------------------------------------------------------------------------------------
# models


def build_ours(device="cpu", *opts):
    """Our ``fcos_R_50_FPN_1x`` with no weight file (random init) on ``device``."""
    from fcos_core.config import cfg as default_cfg
    from fcos_core.modeling.detector import build_detection_model

    c = default_cfg.clone()
    c.merge_from_file(os.path.join(ROOT, "configs", "fcos", OURS_CONFIG))
    c.merge_from_list(["MODEL.WEIGHT", "", "MODEL.DEVICE", device, *opts])
    c.freeze()
    return build_detection_model(c).to(device), c


def _freeze_like_imagenet_backbone(model):
    """BatchNorm -> FrozenBatchNorm2d in the ResNet body, stem and layer1 frozen: what torchvision's
    builders produce with ``weights_backbone`` set (``trainable_backbone_layers`` 3)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    def replace(module):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key).detach())
                setattr(module, name, frozen)
            else:
                replace(child)

    body = model.backbone.body
    replace(body)
    for name, p in body.named_parameters():
        p.requires_grad_(name.startswith(("layer2.", "layer3.", "layer4.")))
    return model


def build_torchvision(name, size, device="cpu"):
    """A torchvision detector, random weights, ImageNet-backbone configuration, transform not resizing."""
    from torchvision.models import detection

    builders = {
        TV_FCOS: (detection.fcos_resnet50_fpn, NUM_CLASSES),
        TV_RETINANET: (detection.retinanet_resnet50_fpn, NUM_CLASSES),
        TV_FASTERRCNN: (detection.fasterrcnn_resnet50_fpn, NUM_CLASSES + 1),
    }
    builder, num_classes = builders[name]
    short, long = min(size), max(size)  # the transform scales by min(min_size / short side, max_size / long side)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, min_size=short, max_size=long)
    model.transform.min_size = (short,)
    model.transform.max_size = long
    return _freeze_like_imagenet_backbone(model).to(device)


def map_torchvision_fcos(tv_state):
    """torchvision ``fcos_resnet50_fpn`` state dict -> our key names (plus unit Scales)."""
    return torchvision_fcos_to_detector(tv_state)


# --------------------------------------------------------------------------------------------
# inputs


def make_image(size, seed):
    """A smooth random RGB image in [0, 1], [3, H, W] (structured, not white noise)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand(1, 3, max(h // 16, 2), max(w // 16, 2), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (img + 0.05 * torch.randn(3, h, w, generator=g)).clamp_(0, 1)


def to_ours(img, cfg):
    """The [0, 1] RGB image as our model takes it: BGR 0-255 (TO_BGR255) minus PIXEL_MEAN, / PIXEL_STD."""
    x = img[[2, 1, 0]] * 255 if cfg.INPUT.TO_BGR255 else img
    mean = torch.tensor(cfg.INPUT.PIXEL_MEAN, dtype=x.dtype)[:, None, None]
    std = torch.tensor(cfg.INPUT.PIXEL_STD, dtype=x.dtype)[:, None, None]
    return ((x - mean) / std).contiguous()


def make_boxes(size, batch, seed):
    """3-5 random boxes per image: list of (boxes [n, 4] xyxy, labels [n] in 1..80)."""
    g = torch.Generator().manual_seed(seed + 1)
    h, w = size
    out = []
    for _ in range(batch):
        n = int(torch.randint(3, 6, (1,), generator=g))
        bw = (torch.rand(n, generator=g) * 0.45 + 0.05) * w
        bh = (torch.rand(n, generator=g) * 0.45 + 0.05) * h
        x0 = torch.rand(n, generator=g) * (w - bw)
        y0 = torch.rand(n, generator=g) * (h - bh)
        boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], 1)
        labels = torch.randint(1, NUM_CLASSES + 1, (n,), generator=g)
        out.append((boxes, labels))
    return out


# --------------------------------------------------------------------------------------------
# calibration of the classifiers (inference)


def _capture(module, run):
    """Outputs of ``module`` (every call) while ``run()`` runs."""
    outs = []
    handle = module.register_forward_hook(lambda m, i, o: outs.append(o.detach().float().cpu()))
    try:
        run()
    finally:
        handle.remove()
    return outs


def _bisect(frac, target, lo, hi, iters=50):
    """x in [lo, hi] with frac(x) ~ target, for frac increasing in x."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if frac(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def calibrate(name, model, call, fraction):
    """Set ``model``'s classifier so that ``fraction`` of its class scores pass its threshold.

    Returns (number of scores above threshold after calibration, total number of class scores).
    """
    with torch.inference_mode():
        if name == OURS:
            th = 0.05  # MODEL.FCOS.INFERENCE_TH on sigmoid(cls)
            conv = model.rpn.head.cls_logits
            logits = torch.cat([o.flatten() for o in _capture(conv, call)])
            count = lambda d: int((torch.sigmoid(logits + d) > th).sum())  # noqa: E731
        elif name == TV_RETINANET:
            th = model.score_thresh
            conv = model.head.classification_head.cls_logits
            logits = torch.cat([o.flatten() for o in _capture(conv, call)])
            count = lambda d: int((torch.sigmoid(logits + d) > th).sum())  # noqa: E731
        elif name == TV_FCOS:
            th = model.score_thresh  # on sqrt(sigmoid(cls) * sigmoid(ctr))
            conv = model.head.classification_head.cls_logits
            ctr_conv = model.head.regression_head.bbox_ctrness
            ctrs = []
            handle = ctr_conv.register_forward_hook(lambda m, i, o: ctrs.append(o.detach().float().cpu()))
            try:
                cls = _capture(conv, call)
            finally:
                handle.remove()
            pairs = [(c[0], torch.sigmoid(t[0])) for c, t in zip(cls, ctrs)]  # [K, H, W], [1, H, W]
            logits = torch.cat([c.flatten() for c, _ in pairs])
            count = lambda d: sum(int((torch.sigmoid(c + d) * t > th * th).sum()) for c, t in pairs)  # noqa: E731
        elif name == TV_FASTERRCNN:
            th = model.roi_heads.score_thresh
            lin = model.roi_heads.box_predictor.cls_score
            logits = torch.cat(_capture(lin, call))  # [proposals, 81]
            count = lambda s: int((torch.softmax(logits * s, 1)[:, 1:] > th).sum())  # noqa: E731
            total = logits[:, 1:].numel()
            # not monotone at large scales (softmax becomes one-hot): scan a log grid
            grid = [10 ** (k / 20) for k in range(-40, 81)]
            scale = min(grid, key=lambda s: abs(count(s) / max(total, 1) - fraction))
            lin.weight.mul_(scale)
            lin.bias.mul_(scale)
            return count(scale), total
        else:
            raise ValueError(name)
        total = logits.numel()
        delta = _bisect(lambda d: count(d) / max(total, 1), fraction, -40.0, 40.0)
        conv.bias.add_(delta)
        return count(delta), total


# --------------------------------------------------------------------------------------------
# timing


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(fns, runs, warmup, device):
    """{name: [seconds per timed round]}: each round calls every fn once, in order."""
    times = OrderedDict((name, []) for name in fns)
    for r in range(warmup + runs):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(ours_times, times):
    """Median over rounds of ours / this in the same round (adjacent in time, so robust to load
    that changes between rounds); NaN without times."""
    if not ours_times or not times:
        return float("nan")
    return statistics.median(a / b for a, b in zip(ours_times, times))


def _n_detections(out):
    if isinstance(out, list) and out and isinstance(out[0], dict):
        return len(out[0]["boxes"])
    return len(out[0])


def reduced_precision(device):
    """The inference table's second precision: ``(label, autocast dtype, None)``, or ``(None, None,
    why not)``. CUDA: "amp" (float16); a CPU with native bfloat16 (``cpu_has_fast_bf16``: AVX-512
    BF16 or AMX): "bf16"; other CPUs: none, bfloat16 would be emulated there (slower than fp32)."""
    if device == "cuda":
        return "amp", torch.float16, None
    if fcos_env.cpu_has_fast_bf16():
        return "bf16", torch.bfloat16, None
    return None, None, (
        "bf16 rows skipped: this CPU has neither AVX-512 BF16 nor AMX (no avx512_bf16 / amx_bf16 flag in "
        "/proc/cpuinfo), so bfloat16 autocast would be emulated and slower than fp32"
    )


def _ours_inference_options(cfg, prec, device):
    """How tools/test_net.py runs ours in ``prec``: fcos_core.engine.inference.make_inference_options
    of ``cfg`` with TEST.AMP on for the reduced precision (folded BN; bfloat16 on a CPU also turns
    channels_last on)."""
    from fcos_core.engine.inference import make_inference_options

    c = cfg.clone()
    c.defrost()
    c.merge_from_list(["TEST.AMP", prec != "fp32"])
    c.freeze()
    return make_inference_options(c, device)


def bench_inference(args):
    """Rows of the inference table (see the module docstring)."""
    import copy

    from fcos_core.engine.inference import forward_for_inference, prepare_for_inference
    from fcos_core.engine.trainer import autocast_context

    device = args.device
    torch.manual_seed(args.seed)
    size = tuple(args.size)
    img = make_image(size, args.seed)
    ours, cfg = build_ours(device)
    ours.eval()
    x_ours = to_ours(img, cfg).to(device)
    x_tv = img.to(device)

    models = OrderedDict()
    models[OURS] = ours
    for name in INFERENCE_MODELS[1:]:
        models[name] = build_torchvision(name, size, device).eval()
    # the same random weights in both FCOS models (classification bias calibrated separately below)
    ours.load_state_dict({k: v.to(device) for k, v in map_torchvision_fcos(models[TV_FCOS].state_dict()).items()}, strict=True)

    def caller(name, model, dtype=None):
        """torchvision (and ours before calibration): ``model([x])`` under autocast of ``dtype``."""
        x = x_ours if name == OURS else x_tv

        def call():
            with torch.inference_mode(), autocast_context(device, dtype):
                return model([x])

        return call

    calib = {}
    for name, model in models.items():
        calib[name] = calibrate(name, model, caller(name, model), args.candidate_fraction)

    def ours_caller(prec):
        """Ours as tools/test_net.py runs it (fcos_core.engine.inference), after the calibration has set
        the classifier bias: batch norms folded into the convs (TEST.FUSE_FROZEN_BN); with TEST.AMP
        (the reduced precision) autocast, and on a CPU in bfloat16 channels_last weights and input."""
        opts = _ours_inference_options(cfg, prec, device)
        expected = None if prec == "fp32" else extra_dtype
        if opts.amp_dtype != expected:
            raise RuntimeError(f"TEST.AMP {prec != 'fp32'} gives autocast {opts.amp_dtype} on {device}, expected {expected}")
        model = prepare_for_inference(ours, fuse_bn=opts.fuse_bn, channels_last=opts.channels_last)

        def call():
            with torch.inference_mode():
                return forward_for_inference(model, [x_ours], device, opts.amp_dtype, opts.channels_last)

        return call

    extra, extra_dtype, _ = reduced_precision(device)
    variants = OrderedDict()
    for prec in ["fp32"] + ([extra] if extra else []):
        dtype = None if prec == "fp32" else extra_dtype
        # bfloat16 on a CPU: torchvision's weights in channels_last too (oneDNN's bfloat16 convolutions
        # want it; its transform batches the image as NCHW, and the first convolution, following its
        # channels_last weight, turns the activations to channels_last)
        tv_channels_last = (device == "cpu" and dtype == torch.bfloat16) or args.torchvision_channels_last
        for name, model in models.items():
            if name == OURS:
                variants[(name, prec)] = ours_caller(prec)
            else:
                if tv_channels_last:
                    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
                variants[(name, prec)] = caller(name, model, dtype)
        transform = models[TV_FCOS].transform

        def run_transform(dtype=dtype):
            with torch.inference_mode(), autocast_context(device, dtype):
                return transform([x_tv])

        variants[(TV_TRANSFORM, prec)] = run_transform

    detections = {}
    for key, fn in variants.items():
        if key[0] != TV_TRANSFORM:
            try:
                detections[key] = _n_detections(fn())
            except Exception as e:  # a reduced-precision variant a model does not support
                detections[key] = None
                variants[key] = None
                print(f"warning: {key[0]} ({key[1]}) failed and is skipped: {type(e).__name__}: {e}", file=sys.stderr)
    runnable = OrderedDict((k, f) for k, f in variants.items() if f is not None)
    times = interleaved(runnable, args.runs, args.warmup, device)

    rows = []
    for (name, prec), fn in variants.items():
        t = times.get((name, prec))
        med = statistics.median(t) if t else float("nan")
        ours_t = times.get((OURS, prec))
        ours_med = statistics.median(ours_t) if ours_t else float("nan")
        above, total = calib.get(name, (None, None))
        rows.append(
            OrderedDict(
                model=name,
                precision=prec,
                median_ms=1e3 * med,
                min_ms=1e3 * min(t) if t else float("nan"),
                ratio_ours_over_this=(ours_med / med) if t and name != TV_TRANSFORM else float("nan"),
                paired_ratio=paired_ratio(ours_t, t) if name != TV_TRANSFORM else float("nan"),
                scores_above_threshold=above,
                class_scores=total,
                detections=detections.get((name, prec)),
                times_ms=[1e3 * v for v in t] if t else [],
            )
        )
    return rows


REDUCED_PRECISION_GOAL = 0.3  # issue 7: ours in bf16 at most 0.3x torchvision FCOS in fp32


def inference_summary(rows, device):
    """Ours in the reduced precision against torchvision FCOS in fp32 (the issue's comparison; its goal,
    for bf16 on a CPU: at most 0.3x), and against ours in fp32; or why there are no such rows."""
    extra, _, why_not = reduced_precision(device)
    out = OrderedDict(precision=extra, note=why_not)
    if extra is None:
        return out
    times = {(r["model"], r["precision"]): r["times_ms"] for r in rows}
    ours, tv, ours32 = times.get((OURS, extra)), times.get((TV_FCOS, "fp32")), times.get((OURS, "fp32"))

    def ratio(a, b):
        return statistics.median(a) / statistics.median(b) if a and b else float("nan")

    out.update(
        ours_over_tv_fcos_fp32=ratio(ours, tv),
        ours_over_tv_fcos_fp32_per_round=paired_ratio(ours, tv),
        ours_over_ours_fp32=ratio(ours, ours32),
        goal=REDUCED_PRECISION_GOAL if extra == "bf16" else None,
    )
    r = out["ours_over_tv_fcos_fp32"]
    out["goal_met"] = None if out["goal"] is None or math.isnan(r) else bool(r <= out["goal"])
    if not ours:
        out["note"] = f"ours failed in {extra} (see the warning above)"
    return out


def bench_train(args):
    """Rows of the training table: step time (interleaved) and, unless --no-memory, peak memory."""
    device = args.device
    size = tuple(args.size)
    steps = OrderedDict()
    precisions = ["fp32"] + (["amp"] if device == "cuda" else [])
    for prec in precisions:
        for name in TRAIN_MODELS:
            steps[(name, prec)] = make_train_step(name, size, args.seed, device, amp=prec == "amp")
    times = interleaved(steps, args.runs, args.warmup, device)
    memory = {}
    if not args.no_memory:
        for key in steps:
            memory[key] = peak_memory_in_child(key[0], args, amp=key[1] == "amp")
    rows = []
    for (name, prec), t in times.items():
        med = statistics.median(t)
        ours_med = statistics.median(times[(OURS, prec)])
        mem = memory.get((name, prec), {})
        ours_mem = memory.get((OURS, prec), {})
        peak = mem.get("peak_total_mib")
        rows.append(
            OrderedDict(
                model=name,
                precision=prec,
                median_ms=1e3 * med,
                min_ms=1e3 * min(t),
                ratio_ours_over_this=ours_med / med,
                paired_ratio=paired_ratio(times[(OURS, prec)], t),
                peak_step_mib=mem.get("peak_step_mib"),
                held_mib=mem.get("held_mib"),
                peak_total_mib=peak,
                memory_ratio_ours_over_this=(ours_mem.get("peak_total_mib") / peak) if peak and ours_mem.get("peak_total_mib") else None,
                max_rss_mib=mem.get("max_rss_mib"),
                memory_method=mem.get("method"),
                memory_error=mem.get("error"),
                last_loss=steps[(name, prec)].last_loss,
                times_ms=[1e3 * v for v in t],
            )
        )
    return rows


class TrainStep:
    """Callable: one SGD step of one model on a fixed batch of 2 images with random boxes."""

    def __init__(self, name, size, seed, device, amp=False):
        torch.manual_seed(seed)
        self.name, self.device, self.amp = name, device, amp
        imgs = [make_image(size, seed + i) for i in range(2)]
        boxes = make_boxes(size, 2, seed)
        if name == OURS:
            from fcos_core.structures.bounding_box import BoxList

            from fcos_core.structures.image_list import to_image_list

            self.model, cfg = build_ours(device)
            # batched as the data loader does, and in channels_last as tools/train_net.py and the
            # trainer put model and images with SOLVER.CHANNELS_LAST
            self.images = to_image_list([to_ours(im, cfg).to(device) for im in imgs], cfg.DATALOADER.SIZE_DIVISIBILITY)
            if cfg.SOLVER.CHANNELS_LAST:
                self.model.to(memory_format=torch.channels_last)
                self.images.tensors = self.images.tensors.contiguous(memory_format=torch.channels_last)
            self.targets = []
            for b, lab in boxes:
                t = BoxList(b.to(device), (size[1], size[0]), mode="xyxy")
                t.add_field("labels", lab.to(device))
                self.targets.append(t)
        else:
            self.model = build_torchvision(name, size, device)
            self.images = [im.to(device) for im in imgs]
            # FCOS / RetinaNet: 0-based classes; (Faster R-CNN would keep 0 for the background)
            self.targets = [{"boxes": b.to(device), "labels": (lab - 1).to(device)} for b, lab in boxes]
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, **SGD)
        self.scaler = torch.amp.GradScaler("cuda") if amp else None
        self.last_loss = None

    def __call__(self):
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            losses = self.model(self.images, self.targets)
        loss = sum(losses.values())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.last_loss = float(loss.detach())
        return loss

    def held_bytes(self):
        """Tensors held between steps: parameters, buffers and optimizer state."""
        n = sum(p.numel() * p.element_size() for p in self.model.parameters())
        n += sum(b.numel() * b.element_size() for b in self.model.buffers())
        for state in self.optimizer.state.values():
            n += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
        return n


def make_train_step(name, size, seed, device, amp=False):
    return TrainStep(name, size, seed, device, amp)


def profiled_peak_bytes(fn):
    """Peak of CPU tensor memory allocated by ``fn`` above what was allocated before it, from the
    allocation/free events of ``torch.profiler.profile(profile_memory=True)`` (the measurement of
    ``tools/benchmark_ops.py``, shared so both scripts count memory the same way)."""
    tools = os.path.dirname(os.path.abspath(__file__))
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import benchmark_ops

    return benchmark_ops.extra_peak_bytes(fn, "cpu")


def peak_rss_mib():
    """This process's peak resident set size: VmHWM of /proc/self/status (per address space, so not
    inherited from the parent the way ``ru_maxrss`` is across fork + exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_memory(args):
    """In the child: peak memory of one training step of ``args.child`` (printed as one JSON line)."""
    amp = args.child.endswith(":amp")
    name = args.child[:-4] if amp else args.child
    torch.set_num_threads(args.threads)
    step = make_train_step(name, tuple(args.size), args.seed, args.device, amp=amp)
    step()  # warm-up: allocates the momentum buffers, caches
    out = {"model": name, "held_mib": step.held_bytes() / 2**20}
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_step_mib=(peak - base) / 2**20, peak_total_mib=peak / 2**20, method="torch.cuda.max_memory_allocated")
    else:
        peak = profiled_peak_bytes(step)
        out.update(
            peak_step_mib=peak / 2**20,
            peak_total_mib=out["held_mib"] + peak / 2**20,
            method="torch.profiler profile_memory (peak allocated tensors) + held tensors",
        )
    out["max_rss_mib"] = peak_rss_mib()
    print("CHILD_RESULT " + json.dumps(out), flush=True)


def peak_memory_in_child(name, args, amp=False):
    """Run this script with ``--child`` for one model; its JSON result (or an ``error`` entry)."""
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child", name + (":amp" if amp else ""),
        "--device", args.device, "--threads", str(args.threads), "--seed", str(args.seed),
        "--size", str(args.size[0]), str(args.size[1]),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("CHILD_RESULT "):
            return json.loads(line[len("CHILD_RESULT "):])
    return {"error": (proc.stderr.strip().splitlines() or ["no result"])[-1][:200]}


# --------------------------------------------------------------------------------------------
# accuracy (tools/test_net.py's model loading and evaluation)


def _import_tool(name):
    tools = os.path.dirname(os.path.abspath(__file__))
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return __import__(name)


def bench_accuracy(args):
    """COCO AP of a trained model (``--weights``) on its config's DATASETS.TEST, in fp32 and with
    TEST.AMP True, each evaluated exactly as ``tools/test_net.py --config-file <--accuracy-config>
    MODEL.WEIGHT <--weights> [TEST.AMP True]`` evaluates it (its ``load_model_for_test`` and
    tools/train_net.py's ``run_test``: fcos_core.engine.inference and the COCO evaluation), with
    OUTPUT_DIR "" (no files written). On a CPU TEST.AMP_DTYPE is bfloat16 (where the CPU has no native
    bfloat16 it is emulated: the AP is that of bfloat16, its time is not); on CUDA float16.
    """
    import logging

    from fcos_core.config import cfg as default_cfg
    from fcos_core.engine.inference import make_inference_options

    test_net = _import_tool("test_net")
    run_test = _import_tool("train_net").run_test
    logger = logging.getLogger("fcos_core.benchmark")
    config = args.accuracy_config
    if not os.path.isabs(config) and not os.path.exists(config):
        config = os.path.join(ROOT, config)
    base = default_cfg.clone()
    base.merge_from_file(config)
    base.merge_from_list(["MODEL.WEIGHT", os.path.abspath(args.weights), "MODEL.DEVICE", args.device, "OUTPUT_DIR", ""])
    if args.device == "cuda":
        reduced_label, reduced_opts = "fp16", ["TEST.AMP_DTYPE", "float16"]
    else:
        reduced_label, reduced_opts = "bf16", ["TEST.AMP_DTYPE", "bfloat16"]
    out = OrderedDict(
        weights=args.weights,
        config=os.path.relpath(config, ROOT) if config.startswith(ROOT + os.sep) else config,
        datasets=list(base.DATASETS.TEST),
        runs=OrderedDict(),
    )
    for label, opts in (("fp32", ["TEST.AMP", False]), (reduced_label, ["TEST.AMP", True, *reduced_opts])):
        c = base.clone()
        c.merge_from_list(opts)
        c.freeze()
        options = make_inference_options(c)
        print(f"accuracy: evaluating {args.weights} on {', '.join(c.DATASETS.TEST)} in {label} ...", file=sys.stderr, flush=True)
        model = test_net.load_model_for_test(c)
        start = time.perf_counter()
        results = run_test(c, model, False, logger)
        seconds = time.perf_counter() - start
        per_dataset = OrderedDict()
        for name, res in zip(c.DATASETS.TEST, results):
            if not (isinstance(res, tuple) and hasattr(res[0], "results")):
                raise RuntimeError(f"accuracy: {name} is not a COCO-format dataset (no COCO AP)")
            per_dataset[name] = OrderedDict((k, res[0].results["bbox"][k]) for k in COCO_AP_KEYS)
        out["runs"][label] = OrderedDict(
            test_amp=label != "fp32",
            autocast=str(options.amp_dtype).replace("torch.", "") if options.amp_dtype else None,
            channels_last=options.channels_last,
            fuse_bn=options.fuse_bn,
            emulated=label == "bf16" and args.device == "cpu" and not fcos_env.cpu_has_fast_bf16(),
            seconds=seconds,
            metrics=per_dataset,
        )
    first = out["datasets"][0]
    ap32 = out["runs"]["fp32"]["metrics"][first]["AP"]
    ap_red = out["runs"][reduced_label]["metrics"][first]["AP"]
    out.update(
        reduced_precision=reduced_label,
        ap_difference_points=100.0 * (ap_red - ap32),
        goal_points=ACCURACY_GOAL_POINTS,
        goal_met=bool(abs(100.0 * (ap_red - ap32)) <= ACCURACY_GOAL_POINTS),
    )
    return out


# --------------------------------------------------------------------------------------------
# ops (tools/benchmark_ops.py)


def bench_ops(args):
    """(rows dict, note): the ops benchmark of tools/benchmark_ops.py, or a note saying why not."""
    tools = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(tools, "benchmark_ops.py")):
        return {}, "skipped: tools/benchmark_ops.py is not there"
    if tools not in sys.path:
        sys.path.insert(0, tools)
    try:
        import benchmark_ops

        ns = argparse.Namespace(device=args.device, threads=args.threads, repeat=max(args.runs, 5), warmup=args.warmup, seed=args.seed)
        return {"ml_nms": benchmark_ops.bench_nms(ns), "sigmoid_focal_loss": benchmark_ops.bench_focal(ns)}, (
            f"from tools/benchmark_ops.py (its own timing: median of {ns.repeat} runs per op, not interleaved)"
        )
    except Exception as e:  # API changed or missing
        return {}, f"skipped: tools/benchmark_ops.py could not be used ({type(e).__name__}: {e})"


# --------------------------------------------------------------------------------------------
# output


def machine_info(args):
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
            f.seek(0)
            flags = next((line for line in f if line.startswith("flags")), "")
        isa = [x for x in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f" {x}" in flags]
    except OSError:
        isa = []
    return OrderedDict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        command="python " + " ".join([os.path.relpath(os.path.abspath(__file__), ROOT)] + sys.argv[1:]),
        device=args.device,
        device_name=torch.cuda.get_device_name() if args.device == "cuda" else name,
        cpu_count=os.cpu_count(),
        cpu_isa=",".join(isa),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        torchvision=__import__("torchvision").__version__,
        size=list(args.size),
        runs=args.runs,
        warmup=args.warmup,
        candidate_fraction=args.candidate_fraction,
        torchvision_channels_last=bool(getattr(args, "torchvision_channels_last", False)),
    )


def _fmt(v, spec=".1f"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, spec)


def _generic_table(rows):
    if not rows:
        return []
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [(_fmt(r[c], ".3f") if isinstance(r[c], float) else str(r[c])) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(info, inference=None, train=None, ops=None, ops_note=None, inference_summary=None, accuracy=None, accuracy_note=None):
    h, w = info["size"]
    lines = [
        f"Machine: {info['device_name']} ({info['device']}, {info['cpu_count']} cores, {info['cpu_isa'] or 'n/a'}); "
        f"threads {info['threads']}; torch {info['torch']}, torchvision {info['torchvision']}; {info['date']}.",
        f"Command: `{info['command']}`",
        "",
    ]
    if inference is not None:
        lines += [
            f"Inference, batch 1, {h}x{w}, median of {info['runs']} interleaved rounds after {info['warmup']} warm-up "
            f"(ratio = ours / this model, below 1: ours is faster; 'per round' = median of the ratios of the "
            f"two models' times in the same round). torchvision times include its "
            f"GeneralizedRCNNTransform (normalisation, identity-scale resize, padding; timed alone in the last row); "
            f"ours gets an already normalised tensor. Classifiers calibrated so that "
            f"{100 * info['candidate_fraction']:g}% of class scores pass each model's own threshold. "
            f"Ours runs as tools/test_net.py runs it (folded batch norms, channels_last weights and input with "
            f"SOLVER.CHANNELS_LAST, the default; in bf16 / amp with TEST.AMP True: autocast); torchvision "
            + ("in channels_last in every precision (--torchvision-channels-last)" if info.get("torchvision_channels_last")
               else "in its default NCHW")
            + f", its bf16 rows: torch.autocast('cpu', torch.bfloat16) and channels_last weights; amp rows "
            f"(CUDA): float16 autocast.",
            "",
            "| model | precision | median ms | min ms | ours / this | ours / this, per round | scores above threshold | detections |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in inference:
            above = "n/a" if r["scores_above_threshold"] is None else f"{r['scores_above_threshold']:,} / {r['class_scores']:,}"
            det = "n/a" if r["detections"] is None else str(r["detections"])
            lines.append(
                f"| {r['model']} | {r['precision']} | {_fmt(r['median_ms'])} | {_fmt(r['min_ms'])} "
                f"| {_fmt(r['ratio_ours_over_this'], '.3f')} | {_fmt(r['paired_ratio'], '.3f')} | {above} | {det} |"
            )
        lines.append("")
        s = inference_summary
        if s and s.get("precision") and s.get("ours_over_tv_fcos_fp32") is not None:
            p = s["precision"]
            line = (f"**Ours {p} / torchvision FCOS fp32: {_fmt(s['ours_over_tv_fcos_fp32'], '.3f')}** "
                    f"(per round {_fmt(s['ours_over_tv_fcos_fp32_per_round'], '.3f')}); "
                    f"ours {p} / ours fp32: {_fmt(s['ours_over_ours_fp32'], '.3f')}.")
            if s.get("goal") is not None:
                verdict = "n/a" if s.get("goal_met") is None else ("met" if s["goal_met"] else "not met")
                line += f" Goal: at most {s['goal']:g}x: {verdict}."
            lines += [line, ""]
        if s and s.get("note"):
            lines += [s["note"] + ".", ""]
    if train is not None:
        method = next((r["memory_method"] for r in train if r.get("memory_method")), None)
        lines += [
            f"Training step (forward + backward + SGD), batch 2, {h}x{w}, 3-5 random boxes per image, median of "
            f"{info['runs']} interleaved rounds after {info['warmup']} warm-up (ratio = ours / this model). "
            f"Ours as tools/train_net.py trains it: channels_last (SOLVER.CHANNELS_LAST), frozen norms folded into "
            f"the convs, tower norms recomputed in the backward pass (MODEL.FCOS.RECOMPUTE_TOWER_NORM). "
            + (f"Peak memory: one child process per model, after one warm-up step; {method}; "
               "'held' = parameters + buffers + momentum; 'max RSS' = the child's peak resident set size "
               "(includes the Python and library footprint)." if method else "Peak memory: not measured."),
            "",
            "| model | precision | median ms | min ms | ours / this | ours / this, per round | peak step MiB | held MiB | peak total MiB | ours / this (memory) | max RSS MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in train:
            lines.append(
                f"| {r['model']} | {r['precision']} | {_fmt(r['median_ms'])} | {_fmt(r['min_ms'])} "
                f"| {_fmt(r['ratio_ours_over_this'], '.3f')} | {_fmt(r['paired_ratio'], '.3f')} | {_fmt(r['peak_step_mib'], '.0f')} | {_fmt(r['held_mib'], '.0f')} "
                f"| {_fmt(r['peak_total_mib'], '.0f')} | {_fmt(r['memory_ratio_ours_over_this'], '.3f')} | {_fmt(r['max_rss_mib'], '.0f')} |"
            )
            if r.get("memory_error"):
                lines.append(f"|  | memory error: {r['memory_error']} | | | | | | | | | |")
        lines.append("")
    if accuracy is not None:
        red = accuracy["reduced_precision"]
        lines += [
            f"Accuracy of `{accuracy['weights']}` (config `{accuracy['config']}`) on {', '.join(accuracy['datasets'])}, "
            f"evaluated as tools/test_net.py evaluates it, in fp32 and with TEST.AMP True ({red}); COCO AP in points; "
            f"'seconds' = the whole evaluation (data loading, inference, COCO evaluation), for context only.",
            "",
            "| precision | dataset | autocast | channels_last | " + " | ".join(COCO_AP_KEYS) + " | seconds |",
            "|---|---|---|---|" + "---:|" * (len(COCO_AP_KEYS) + 1),
        ]
        for label, run in accuracy["runs"].items():
            for name, m in run["metrics"].items():
                dtype = (run["autocast"] or "none") + (" (emulated)" if run.get("emulated") else "")
                lines.append(
                    f"| {label} | {name} | {dtype} | {run['channels_last']} | "
                    + " | ".join(_fmt(100 * m[k] if m[k] is not None and m[k] >= 0 else None, ".2f") for k in COCO_AP_KEYS)
                    + f" | {_fmt(run['seconds'])} |"
                )
        verdict = "met" if accuracy["goal_met"] else "not met"
        lines += [
            "",
            f"**AP {red} - fp32: {accuracy['ap_difference_points']:+.2f} points** ({accuracy['datasets'][0]}); "
            f"goal: within {accuracy['goal_points']:g} points: {verdict}.",
            "",
        ]
    elif accuracy_note:
        lines += [f"Accuracy: {accuracy_note}", ""]
    if ops is not None or ops_note:
        lines += [f"Ops: {ops_note}", ""]
        for title, rows in (ops or {}).items():
            lines += [f"{title}:", ""] + _generic_table(rows) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is available")
    torch.set_num_threads(args.threads)
    if args.child:
        return child_memory(args)
    info = machine_info(args)
    result = OrderedDict(info=info)
    inference = train = ops = ops_note = summary = accuracy = accuracy_note = None
    if args.only in (None, "inference"):
        inference = result["inference"] = bench_inference(args)
        summary = result["inference_summary"] = inference_summary(inference, args.device)
    if args.only in (None, "train"):
        train = result["train"] = bench_train(args)
    if args.only in (None, "ops"):
        ops, ops_note = bench_ops(args)
        result["ops"], result["ops_note"] = ops, ops_note
    if args.only in (None, "accuracy"):
        if args.weights:
            accuracy = result["accuracy"] = bench_accuracy(args)
        else:
            accuracy_note = result["accuracy_note"] = "skipped: no --weights (a trained model) given"
    text = markdown(info, inference, train, ops, ops_note, summary, accuracy, accuracy_note)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
