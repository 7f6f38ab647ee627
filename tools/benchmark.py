#!/usr/bin/env python
"""Benchmark FCOS (this codebase) against torchvision's detectors, as ratios measured in one process.

Parts (``--only`` runs one of them; by default all three):

* ``inference``: time per image, eval mode, ``torch.inference_mode``, batch 1, one image of
  ``--size H W`` (default 800 x 1333), no data loading. Ours: ``fcos_R_50_FPN_1x`` (backbone, head
  and the full post-processing with the config's INFERENCE_TH 0.05, PRE_NMS_TOP_N 1000, NMS_TH
  0.6, 100 detections) on an already normalised tensor (BGR 0-255 minus PIXEL_MEAN), prepared as
  tools/test_net.py prepares it (TEST.FUSE_FROZEN_BN: the backbone's FrozenBatchNorm2d folded into
  the convs; torchvision keeps its FrozenBatchNorm2d layers, it has no such option). torchvision:
  ``fcos_resnet50_fpn``, ``retinanet_resnet50_fpn`` and ``fasterrcnn_resnet50_fpn`` called on a list
  of one [3, H, W] tensor in [0, 1] (the same image) with ``transform.min_size = (min(H, W),)`` and
  ``transform.max_size = max(H, W)`` so that their transform does not change the size; their time
  INCLUDES that ``GeneralizedRCNNTransform`` (normalisation, an identity-scale resize, padding),
  which is also timed alone in its own row.
* ``train``: one training step (forward with losses, backward, SGD step with momentum 0.9, weight
  decay 1e-4), batch 2 of one size, 3-5 random boxes per image; ours vs torchvision FCOS and
  RetinaNet. Peak memory is measured in a child process per model (this script with the hidden
  ``--child`` flag) after one warm-up step: on CPU the peak of allocated tensor memory during one
  step above what was allocated before it (``torch.profiler`` with ``profile_memory=True``: the
  running sum of its allocation and free events), plus the tensors held between steps (parameters,
  buffers, momentum) and the child's peak resident set size (VmHWM); on CUDA
  ``torch.cuda.max_memory_allocated``.
* ``ops``: ``ml_nms`` vs ``torchvision.ops.batched_nms`` and the sigmoid focal loss vs
  ``torchvision.ops.sigmoid_focal_loss``, through ``tools/benchmark_ops.py`` (skipped with a note
  if it is missing or its API is not the expected one).

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

from fcos_core.utils.imagenet_weights import torchvision_fcos_to_detector  # noqa: E402

OURS_CONFIG = "fcos_R_50_FPN_1x.yaml"
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
    parser.add_argument("--only", choices=["inference", "train", "ops"], help="run one part only")
    parser.add_argument("--candidate-fraction", type=float, default=0.01, help="fraction of class scores above threshold (inference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="train: skip the per-model peak-memory child processes")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the markdown table")
    parser.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)  # internal: peak memory of one model
    return parser.parse_args(argv)


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


def bench_inference(args):
    """Rows of the inference table (see the module docstring)."""
    from fcos_core.engine.inference import prepare_for_inference

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

    def caller(name, model, amp=False):
        x = x_ours if name == OURS else x_tv

        def call():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                return model([x])

        return call

    calib = {}
    for name, model in models.items():
        calib[name] = calibrate(name, model, caller(name, model), args.candidate_fraction)
    # ours runs as tools/test_net.py runs it: batch norms folded into the convs (TEST.FUSE_FROZEN_BN),
    # after the calibration has set the classifier bias
    models[OURS] = prepare_for_inference(ours, fuse_bn=cfg.TEST.FUSE_FROZEN_BN)

    variants = OrderedDict()
    precisions = ["fp32"] + (["amp"] if device == "cuda" else [])
    for prec in precisions:
        for name, model in models.items():
            variants[(name, prec)] = caller(name, model, amp=prec == "amp")
        transform = models[TV_FCOS].transform

        def run_transform(amp=prec == "amp"):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                return transform([x_tv])

        variants[(TV_TRANSFORM, prec)] = run_transform

    detections = {}
    for key, fn in variants.items():
        if key[0] != TV_TRANSFORM:
            try:
                detections[key] = _n_detections(fn())
            except Exception as e:  # an AMP variant a model does not support
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

            self.model, cfg = build_ours(device)
            self.images = [to_ours(im, cfg).to(device) for im in imgs]
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
        isa = [x for x in ("avx2", "avx512f", "amx_tile") if f" {x}" in flags]
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


def markdown(info, inference=None, train=None, ops=None, ops_note=None):
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
            f"{100 * info['candidate_fraction']:g}% of class scores pass each model's own threshold.",
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
    if train is not None:
        method = next((r["memory_method"] for r in train if r.get("memory_method")), None)
        lines += [
            f"Training step (forward + backward + SGD), batch 2, {h}x{w}, 3-5 random boxes per image, median of "
            f"{info['runs']} interleaved rounds after {info['warmup']} warm-up (ratio = ours / this model). "
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
    inference = train = ops = ops_note = None
    if args.only in (None, "inference"):
        inference = result["inference"] = bench_inference(args)
    if args.only in (None, "train"):
        train = result["train"] = bench_train(args)
    if args.only in (None, "ops"):
        ops, ops_note = bench_ops(args)
        result["ops"], result["ops_note"] = ops, ops_note
    text = markdown(info, inference, train, ops, ops_note)
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
