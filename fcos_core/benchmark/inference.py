"""The inference part of the benchmark: time per image of ours and torchvision's detectors, in fp32
and in the device's reduced precision (see tools/benchmark.py's docstring)."""
import copy
import statistics
import math
import sys
from collections import OrderedDict

import torch

from fcos_core.utils import env as fcos_env
from fcos_core.benchmark.models import (
    INFERENCE_MODELS,
    OURS,
    TV_FCOS,
    TV_TRANSFORM,
    build_ours,
    build_torchvision,
    calibrate,
    make_image,
    map_torchvision_fcos,
    to_ours,
)
from fcos_core.benchmark.timing import interleaved, paired_ratio


def n_detections(out):
    """The number of detections of a model's output for one image (ours: a BoxList list; torchvision: dicts)."""
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


def ours_inference_options(cfg, prec, device):
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
    """Rows of the inference table (see tools/benchmark.py's docstring)."""
    from fcos_core.engine.inference import forward_for_inference, prepare_for_inference
    from fcos_core.utils.amp import autocast_context

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
        opts = ours_inference_options(cfg, prec, device)
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
                detections[key] = n_detections(fn())
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
