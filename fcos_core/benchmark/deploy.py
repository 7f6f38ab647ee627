"""The deploy part of the benchmark (``tools/benchmark.py --only deploy``, CPU only): the ways of
running ours on a CPU against each other, OpenVINO and torchvision's FCOS, in one process.

Every row runs the whole detector with its post-processing on one image of ``--size`` (batch 1, the
benchmark image of :mod:`fcos_core.benchmark.models`), ``--threads`` threads for torch and for the
ONNX runtimes alike, interleaved rounds (:func:`fcos_core.benchmark.timing.interleaved`), median:

* ours fp32 / bf16: as tools/test_net.py runs it (``make_inference_options``,
  ``prepare_for_inference``, ``forward_for_inference`` of fcos_core.engine.inference: folded batch
  norms, channels_last; bf16 = TEST.AMP True), with TEST.COMPILE True ("ours, TEST.COMPILE"), and in
  fp32 with TEST.WINOGRAD True (3x3 convolutions by Winograd F(4x4, 3x3)), eager and compiled;
* the model's ONNX export with post-processing (``export_onnx`` with ``make_export_postprocessor``, as
  fcos_core.export.runtime's cached export is made) under onnxruntime (fp32, int8) and OpenVINO
  (fp32, bf16 = the fp32 file with the bf16 precision hint, int8), run by
  :class:`~fcos_core.export.runtime.OnnxRuntimeRunner` / :class:`~fcos_core.export.runtime.OpenVinoRunner`;
  int8 = :func:`fcos_core.export.quantize.quantize_export` of that export (convolutions only)
  calibrated on ``--int8-calib-images`` variants of the benchmark image (brighter / darker, flipped);
* torchvision ``fcos_resnet50_fpn`` fp32 and bf16 (autocast, channels_last weights), built as the
  inference part builds it: same random weights as ours, its own classifier calibration.

Ours is calibrated as in the inference part (``--candidate-fraction`` of its class scores above
INFERENCE_TH), before it is prepared, compiled or exported, so every row of ours does the same
post-processing work. Rows skipped, each with its reason: bf16 on a CPU without native bfloat16;
a runtime that is not installed; ``--deploy-skip GROUP``; a row that fails on its first call.

Columns: s/img; this / ours fp32 and this / OpenVINO in the same precision (fp32 rows against
OpenVINO fp32, bf16 against OpenVINO bf16, int8 against OpenVINO int8), each also as the median of
the per-round ratios; the conv throughput fraction: the detector's convolution FLOPs for this image
(2 x multiply-adds of every convolution of backbone, FPN and head, counted once from the shapes by
torch's FlopCounterMode on the eager fp32 model, for the padded input; the post-processing has no
convolutions and is excluded, though its time is in the row's) / the row's time / the CPU's
convolution throughput in the row's dtype, timed in the same interleaved rounds as the rows (median) on the head-tower
convolution of tools/conv_throughput.py (fcos_core.benchmark.conv_throughput;
int8: torch's quantized convolution on oneDNN, left blank where it cannot run). The Winograd rows do
fewer multiplications than those direct-convolution FLOPs: theirs is an effective fraction, which can
pass 1. The summary gives the fastest PyTorch path of each precision against OpenVINO in it, and the
issue's goals: ours compiled + Winograd fp32 / OpenVINO fp32 at most 1.0x, ours compiled bf16 /
OpenVINO bf16 at most 1.2x.
"""
import copy
import os
import statistics
import sys
import tempfile
import time
from collections import OrderedDict

import torch

from fcos_core.benchmark.conv_throughput import CONVS, TORCH_DTYPES, conv_call, conv_flops, model_conv_flops
from fcos_core.benchmark.inference import n_detections, reduced_precision
from fcos_core.benchmark.models import (OURS, TV_FCOS, build_ours, build_torchvision, calibrate, make_image,
                                        map_torchvision_fcos, to_ours)
from fcos_core.benchmark.report import fmt, markdown_table
from fcos_core.benchmark.timing import interleaved, paired_ratio

OURS_PATH = "ours fcos_R_50_FPN_1x, as tools/test_net.py runs it"
COMPILED_PATH = "ours, TEST.COMPILE"
WINOGRAD_PATH = "ours, TEST.WINOGRAD"
WINOGRAD_COMPILED_PATH = "ours, TEST.COMPILE + TEST.WINOGRAD"
ORT_PATH = "ONNX export, onnxruntime"
OV_PATH = "ONNX export, OpenVINO"
TV_PATH = "torchvision fcos_resnet50_fpn"
# (path, precision, group): --deploy-skip takes groups ("int8" skips both int8 rows, "compiled" every row
# that compiles); ours is the reference
ROWS = (
    (OURS_PATH, "fp32", "ours"), (OURS_PATH, "bf16", "ours"),
    (COMPILED_PATH, "fp32", "compiled"), (COMPILED_PATH, "bf16", "compiled"),
    (WINOGRAD_PATH, "fp32", "winograd"), (WINOGRAD_COMPILED_PATH, "fp32", "compiled"),
    (ORT_PATH, "fp32", "onnxruntime"), (ORT_PATH, "int8", "onnxruntime"),
    (OV_PATH, "fp32", "openvino"), (OV_PATH, "bf16", "openvino"), (OV_PATH, "int8", "openvino"),
    (TV_PATH, "fp32", "torchvision"), (TV_PATH, "bf16", "torchvision"),
)
SKIP_GROUPS = ("compiled", "winograd", "onnxruntime", "openvino", "int8", "torchvision")
# issue 17: precision -> (our fastest PyTorch path in it, at most this many times OpenVINO's time)
GOALS = OrderedDict([("fp32", (WINOGRAD_COMPILED_PATH, 1.0)), ("bf16", (COMPILED_PATH, 1.2))])
GOAL_LABELS = {WINOGRAD_COMPILED_PATH: "ours compiled + Winograd", COMPILED_PATH: "ours compiled"}
HEADER_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def _log(message):
    print("deploy: " + message, file=sys.stderr, flush=True)


def calibration_images(img, cfg, count):
    """``count`` float32 arrays [1, 3, H, W] (as the graph's input): the benchmark image ``img`` (RGB
    [3, H, W] in [0, 1]) with brightness scaled from 0.75 to 1.25, every second one flipped left-right."""
    for k in range(count):
        variant = (img * (0.75 + 0.5 * k / max(count - 1, 1))).clamp(0, 1)
        if k % 2:
            variant = variant.flip(-1)
        yield to_ours(variant, cfg)[None].numpy()


class _Exports(object):
    """The ONNX files of the calibrated model, made on first request in ``folder``: ``fp32()``, ``int8()``.
    A file that failed to be made raises the same error for every later row instead of trying again."""

    def __init__(self, model, cfg, img, folder, calib_images):
        self.model, self.cfg, self.img, self.folder, self.calib_images = model, cfg, img, folder, calib_images
        self.paths = {}

    def _once(self, key, make):
        if key not in self.paths:
            try:
                self.paths[key] = make()
            except Exception as exc:
                self.paths[key] = exc
        if isinstance(self.paths[key], Exception):
            raise self.paths[key]
        return self.paths[key]

    def fp32(self):
        return self._once("fp32", self._export)

    def int8(self):
        return self._once("int8", self._quantize)

    def _export(self):
        from fcos_core.export.onnx import export_onnx
        from fcos_core.export.postprocess import make_export_postprocessor

        path = os.path.join(self.folder, "fcos.onnx")
        _log("exporting the model to ONNX with post-processing ...")
        export_onnx(self.model, path, make_export_postprocessor(self.cfg))
        return path

    def _quantize(self):
        from fcos_core.export.quantize import ArrayCalibrationReader, int8_path, quantize_export

        fp32 = self.fp32()
        _log("quantizing the export to int8, calibrated on {} variants of the image ...".format(self.calib_images))
        reader = ArrayCalibrationReader(calibration_images(self.img, self.cfg, self.calib_images),
                                        "variants of the benchmark image")
        return quantize_export(fp32, int8_path(fp32), reader)


def _setup(args):
    """The calibrated models, the image in each model's input form and their conv FLOPs (a dict)."""
    torch.manual_seed(args.seed)
    size = tuple(args.size)
    img = make_image(size, args.seed)
    ours, cfg = build_ours("cpu")
    tv = build_torchvision(TV_FCOS, size).eval()
    ours.load_state_dict(map_torchvision_fcos(tv.state_dict()), strict=True)  # the same random weights
    ours.eval()
    x = to_ours(img, cfg)
    ours_call, tv_call = (lambda: ours([x])), (lambda: tv([img]))
    calib = {OURS_PATH: calibrate(OURS, ours, ours_call, args.candidate_fraction),
             TV_PATH: calibrate(TV_FCOS, tv, tv_call, args.candidate_fraction)}
    flops = {OURS_PATH: model_conv_flops(ours_call), TV_PATH: model_conv_flops(tv_call)}
    return dict(cfg=cfg, ours=ours, tv=tv, img=img, x=x, calib=calib, flops=flops)


def _ours_caller(s, prec, compiled, winograd=False):
    """Ours as tools/test_net.py runs it with TEST.AMP (``prec`` "bf16"), TEST.COMPILE ``compiled`` and
    TEST.WINOGRAD ``winograd``."""
    from fcos_core.engine.inference import forward_for_inference, make_inference_options, prepare_for_inference

    c = s["cfg"].clone()
    c.defrost()
    c.merge_from_list(["TEST.AMP", prec != "fp32", "TEST.COMPILE", compiled, "TEST.WINOGRAD", winograd])
    opts = make_inference_options(c, "cpu")
    expected = torch.bfloat16 if prec == "bf16" else None
    if opts.amp_dtype != expected or (opts.compile, opts.winograd) != (compiled, winograd):
        raise RuntimeError("TEST.AMP {} / TEST.COMPILE {} / TEST.WINOGRAD {} give {}".format(
            prec != "fp32", compiled, winograd, opts))
    model = prepare_for_inference(s["ours"], opts.fuse_bn, opts.channels_last, opts.compile, opts.winograd)

    def call():
        with torch.inference_mode():
            return forward_for_inference(model, [s["x"]], "cpu", opts.amp_dtype, opts.channels_last)

    return call


def _runtime_caller(s, runtime, prec, threads):
    """The export (``prec`` "int8": its int8 twin) under ``runtime``, called on the benchmark image."""
    from fcos_core.export.runtime import OnnxRuntimeRunner, OpenVinoRunner
    from fcos_core.structures.image_list import to_image_list

    path = s["exports"].int8() if prec == "int8" else s["exports"].fp32()
    if runtime == ORT_PATH:
        runner = OnnxRuntimeRunner(path, threads)
    else:
        runner = OpenVinoRunner(path, threads, "bf16" if prec == "bf16" else "f32")
    images = to_image_list([s["x"]], s["cfg"].DATALOADER.SIZE_DIVISIBILITY)
    return lambda: runner(images)


def _torchvision_caller(s, prec):
    """torchvision FCOS on [image in 0-1]; bf16: autocast and channels_last weights (the inference part's)."""
    from fcos_core.utils.amp import autocast_context

    model = s["tv"] if prec == "fp32" else copy.deepcopy(s["tv"]).to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if prec == "bf16" else None

    def call():
        with torch.inference_mode(), autocast_context("cpu", dtype):
            return model([s["img"]])

    return call


def skip_reason(path, prec, group, skip):
    """Why the row (``path``, ``prec``) of group ``group`` does not run here (str), or None.
    ``skip``: the --deploy-skip groups."""
    if group in skip or (prec == "int8" and "int8" in skip):
        return "not run (--deploy-skip {})".format("int8" if prec == "int8" and "int8" in skip else group)
    if prec == "bf16":
        why = reduced_precision("cpu")[2]
        if why:
            return why
    if group in ("onnxruntime", "openvino"):
        from fcos_core.export.runtime import require_backend

        try:
            require_backend(group)
        except ImportError as exc:
            return str(exc)
    return None


def _build(s, path, prec, threads):
    if path in (OURS_PATH, COMPILED_PATH, WINOGRAD_PATH, WINOGRAD_COMPILED_PATH):
        return _ours_caller(s, prec, path in (COMPILED_PATH, WINOGRAD_COMPILED_PATH),
                            path in (WINOGRAD_PATH, WINOGRAD_COMPILED_PATH))
    if path in (ORT_PATH, OV_PATH):
        return _runtime_caller(s, path, prec, threads)
    return _torchvision_caller(s, prec)


def _callers(s, args):
    """{(path, prec): callable} of the rows that run, their first call made (it compiles, and counts the
    detections); {(path, prec): reason} of the others; {(path, prec): detections}."""
    fns, reasons, detections = OrderedDict(), OrderedDict(), {}
    for path, prec, group in ROWS:
        key = (path, prec)
        reasons[key] = skip_reason(path, prec, group, args.deploy_skip)
        if reasons[key] is not None:
            continue
        try:
            _log("{} {}: first call{} ...".format(path, prec, " (compiles)" if "TEST.COMPILE" in path else ""))
            fn = _build(s, path, prec, args.threads)
            detections[key] = n_detections(fn())
            fns[key] = fn
        except Exception as exc:  # a row this machine cannot run: said in the table, the others go on
            reasons[key] = "failed: {}: {}".format(type(exc).__name__, (str(exc).strip().splitlines() or [""])[0])
            _log("{} {} {}".format(path, prec, reasons[key]))
    return fns, reasons, detections


REFERENCE = "reference convolution"  # the timed calls' key of the CPU's reference convolution (CONVS[0])


REFERENCE_SECONDS = 0.25  # each timed call of the reference runs the convolution for about this long


def _repeated(call, seconds):
    """(a callable running ``call`` n times back to back, n): n such that the loop takes about
    ``seconds`` (one call timed after two warm-up calls). A single bf16 convolution takes a few ms, so
    alone it would mostly time how fast the cores come back from the previous row's runtime (whose
    threads spin on after its call); a loop of them measures the convolution."""
    call()
    call()
    start = time.perf_counter()
    call()
    n = max(1, int(round(seconds / max(time.perf_counter() - start, 1e-6))))

    def loop():
        for _ in range(n):
            call()
    return loop, n


def reference_conv_calls(dtypes, seconds=REFERENCE_SECONDS):
    """The CPU's reference convolution (:data:`CONVS` [0]) per dtype, to be timed in the same
    interleaved rounds as the rows (so it sees the same load): ({(REFERENCE, dtype): callable running
    it n times}, {dtype: n}, notes (list of str) for the dtypes it cannot run, whose fraction is left
    blank)."""
    calls, repeats, notes = OrderedDict(), OrderedDict(), []
    _, c_in, c_out, k, stride, h, w = CONVS[0]
    for dtype in dtypes:
        try:
            call = conv_call(c_in, c_out, k, stride, h, w, TORCH_DTYPES[dtype])
        except Exception as exc:  # int8 without torch's oneDNN quantized engine
            notes.append("{} convolution throughput not measured ({}: {}), its fraction left blank".format(
                dtype, type(exc).__name__, exc))
            continue
        calls[(REFERENCE, dtype)], repeats[dtype] = _repeated(call, seconds)
    return calls, repeats, notes


def conv_throughputs(dtypes, times, repeats):
    """{dtype: FLOP/s of the reference convolution, None where it did not run}: ``repeats[dtype]``
    convolutions per call of :func:`reference_conv_calls`, over the median of its interleaved ``times``."""
    flops = conv_flops(*CONVS[0][1:])
    return OrderedDict((d, flops * repeats[d] / statistics.median(times[(REFERENCE, d)])
                        if times.get((REFERENCE, d)) else None) for d in dtypes)


def bench_deploy(args):
    """The deploy table (see the module docstring): an OrderedDict with ``rows`` (one per :data:`ROWS`
    entry), ``summary`` (:func:`deploy_summary`), ``conv_gflop`` (per model), ``throughput_gflops``
    (per dtype), ``versions`` and ``notes``."""
    if args.device != "cpu":
        raise ValueError("--only deploy runs on the CPU; --device {} is not supported".format(args.device))
    s = _setup(args)
    with tempfile.TemporaryDirectory(prefix="fcos_deploy_") as folder:
        s["exports"] = _Exports(s["ours"], s["cfg"], s["img"], folder, args.int8_calib_images)
        fns, reasons, detections = _callers(s, args)
        dtypes = sorted({prec for _, prec in fns}, key=("fp32", "bf16", "int8").index)
        references, repeats, notes = reference_conv_calls(dtypes)
        _log("timing {} rows and the reference convolution, {} rounds after {} warm-up ...".format(
            len(fns), args.runs, args.warmup))
        times = interleaved(OrderedDict(list(fns.items()) + list(references.items())), args.runs, args.warmup, "cpu",
                            rotate=True)
    throughput = conv_throughputs(dtypes, times, repeats)
    rows = make_rows(times, reasons, detections, s["flops"], throughput, s["calib"])
    return OrderedDict(rows=rows, summary=deploy_summary(rows), conv_gflop={k: v / 1e9 for k, v in s["flops"].items()},
                       throughput_gflops={k: (v / 1e9 if v else None) for k, v in throughput.items()},
                       versions=runtime_versions(), notes=notes)


def _ratio(a, b):
    return statistics.median(a) / statistics.median(b) if a and b else float("nan")


def make_rows(times, reasons, detections, flops, throughput, calib):
    """The table's rows (OrderedDicts, :data:`ROWS` order) from ``times`` {(path, prec): [seconds]},
    ``reasons`` {(path, prec): skip reason or None}, ``detections`` {(path, prec): count}, ``flops``
    {path of a model: conv FLOPs per image; the exports and the compiled model are ours},
    ``throughput`` {dtype: FLOP/s or None} and ``calib`` {path: (scores above threshold, class scores)}."""
    rows = []
    ours = times.get((OURS_PATH, "fp32"))
    for path, prec, _ in ROWS:
        t = times.get((path, prec))
        openvino = times.get((OV_PATH, prec))
        model = TV_PATH if path == TV_PATH else OURS_PATH
        seconds = statistics.median(t) if t else float("nan")
        peak = throughput.get(prec)
        rows.append(OrderedDict(
            path=path, precision=prec, seconds=seconds, min_seconds=min(t) if t else float("nan"),
            vs_ours_fp32=_ratio(t, ours), vs_ours_fp32_per_round=paired_ratio(t, ours),
            vs_openvino=_ratio(t, openvino), vs_openvino_per_round=paired_ratio(t, openvino),
            conv_gflops=flops[model] / seconds / 1e9 if t else float("nan"),
            conv_fraction=flops[model] / seconds / peak if t and peak else float("nan"),
            detections=detections.get((path, prec)), scores_above_threshold=list(calib[model]),
            skipped=reasons.get((path, prec)) if not t else None, times_s=list(t or [])))
    return rows


def deploy_summary(rows):
    """{precision: {path, ratio, per_round, best_round, goal, met}}: the path of :data:`GOALS` / OpenVINO
    in fp32 and bf16 against its goal (``met`` None when either row did not run)."""
    by_key = {(r["path"], r["precision"]): r for r in rows}
    out = OrderedDict()
    for prec, (path, goal) in GOALS.items():
        row = by_key[(path, prec)]
        ratio = row["vs_openvino"]
        best = by_key[(OV_PATH, prec)]["min_seconds"]
        out[prec] = OrderedDict(path=path, ratio=ratio, per_round=row["vs_openvino_per_round"],
                                best_round=row["min_seconds"] / best if best == best else float("nan"), goal=goal,
                                met=None if ratio != ratio else bool(ratio <= goal))
    return out


def runtime_versions():
    """{package: version or "not installed"} of the ONNX runtimes."""
    out = OrderedDict()
    for name in ("onnxruntime", "openvino"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = "not installed"
    return out


def deploy_lines(info, deploy):
    """The markdown of the deploy table (lines), ``info`` from report.machine_info."""
    h, w = info["size"]
    flags = info.get("cpu_flags", {})
    conv = CONVS[0]
    gflop = deploy["conv_gflop"]
    lines = [
        "Deployment (CPU): {}; {}. {} threads for torch and the ONNX runtimes; onnxruntime {}, OpenVINO {}.".format(
            info["device_name"], ", ".join("{} {}".format(f, "present" if flags.get(f) else "absent") for f in HEADER_FLAGS),
            info["threads"], deploy["versions"]["onnxruntime"], deploy["versions"]["openvino"]),
        "",
        "One {}x{} image, batch 1, every row the whole detector with post-processing; median of {} interleaved rounds "
        "after {} warm-up, each round starting one row later than the one before; best round: the fastest round. "
        "'vs' columns: this row's time / the other's (below 1: this row is faster), ratio of the "
        "medians and, in brackets, the median of the per-round ratios. Conv FLOPs per image (2 x multiply-adds, "
        "post-processing excluded): ours {:.1f} G, torchvision {:.1f} G; conv throughput fraction = those FLOPs / "
        "the row's time / the CPU's throughput on the {} conv ({}x{}) in the row's dtype: {}.".format(
            h, w, info["runs"], info["warmup"], gflop[OURS_PATH], gflop[TV_PATH], conv[0], conv[5], conv[6],
            ", ".join("{} {} G{}/s".format(k, fmt(v, ".0f"), "OP" if k == "int8" else "FLOP")
                      for k, v in deploy["throughput_gflops"].items())),
        "",
    ]
    table, skipped = [], []
    for r in deploy["rows"]:
        if r["skipped"]:
            skipped.append("- {} {}: {}".format(r["path"], r["precision"], r["skipped"]))
            table.append([r["path"], r["precision"], "skipped", "", "", "", "", "", ""])
            continue
        table.append([r["path"], r["precision"], fmt(r["seconds"], ".3f"), fmt(r["min_seconds"], ".3f"),
                      "{} ({})".format(fmt(r["vs_ours_fp32"], ".3f"), fmt(r["vs_ours_fp32_per_round"], ".3f")),
                      "{} ({})".format(fmt(r["vs_openvino"], ".3f"), fmt(r["vs_openvino_per_round"], ".3f")),
                      fmt(r["conv_gflops"], ".0f"), fmt(r["conv_fraction"], ".3f"), str(r["detections"])])
    header = ["path", "precision", "s/img", "best round s", "vs ours fp32", "vs OpenVINO same precision", "conv GFLOP/s",
              "conv throughput fraction", "detections"]
    lines += markdown_table(header, table, "llrrrrrrr") + [""]
    lines += skipped + ([""] if skipped else []) + [summary_line(deploy["summary"]), ""]
    return lines + ["Note: {}.".format(n) for n in deploy["notes"]] + ([""] if deploy["notes"] else [])


def summary_line(summary):
    """One markdown line: our fastest path / OpenVINO per precision against its goal."""
    parts = []
    for prec, s in summary.items():
        verdict = "n/a (a row did not run)" if s["met"] is None else ("met" if s["met"] else "not met")
        label = GOAL_LABELS.get(s.get("path", COMPILED_PATH), "ours")
        parts.append("{6} {0} / OpenVINO {0}: {1} (per round {2}, best rounds {3}), goal at most {4:.1f}x: "
                     "{5}".format(prec, fmt(s["ratio"], ".3f"), fmt(s["per_round"], ".3f"),
                                  fmt(s.get("best_round", float("nan")), ".3f"), s["goal"], verdict, label))
    return "**" + "; ".join(parts) + ".**"
