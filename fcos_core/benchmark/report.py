"""The benchmarks' output: machine information and markdown tables, built by :func:`markdown_table`."""
import datetime
import json
import math
import os
import platform
import sys
from collections import OrderedDict

import torch

from fcos_core.benchmark.accuracy import COCO_AP_KEYS
from fcos_core.benchmark.models import ROOT
from fcos_core.benchmark.ops import ALPHA, GAMMA, IOU_THRESHOLD, NUM_CLASSES

ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def fmt(v, spec=".1f"):
    """``v`` formatted with ``spec``; "n/a" for None and NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, spec)


def markdown_table(header, rows, align=None):
    """Lines of a markdown table: ``header`` (column names), ``rows`` (lists of cells, made strings
    with ``str``; a row that is a string is kept as it is, a line of its own) and ``align``, one
    letter per column: "l" (the default), "r" or "c"."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"{len(header)} columns, {len(align)} alignments")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(ALIGN[a] for a in align) + "|"]
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
            continue
        if len(row) != len(header):
            raise ValueError(f"{len(header)} columns, a row of {len(row)}")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return lines


def dict_table(rows):
    """Lines of a markdown table of dicts (columns: the first dict's keys; floats as .3f); [] without rows."""
    if not rows:
        return []
    cols = list(rows[0])
    return markdown_table(cols, [[fmt(r[c], ".3f") if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows])


# the CPU features that change the figures: SIMD width, bfloat16 and int8 dot products, AMX tiles
ISA_FLAGS = ("sse4_2", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info():
    """{"cpu": model name, "cpus": logical CPUs, "flags": those of :data:`ISA_FLAGS` it has, comma-separated,
    "isa": {flag: present (bool)} for every flag of :data:`ISA_FLAGS`}, from /proc/cpuinfo (the
    platform's processor name, and every flag absent, where it cannot be read)."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), name)
        flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "")
    except OSError:
        pass
    have = set(flags.split())
    return OrderedDict(cpu=name, cpus=os.cpu_count(), flags=",".join(x for x in ISA_FLAGS if x in have),
                       isa=OrderedDict((x, x in have) for x in ISA_FLAGS))


def write_outputs(text, result, markdown_path=None, json_path=None):
    """Print ``text``; write it to ``markdown_path`` and ``result`` as json to ``json_path`` when given."""
    print(text)
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write(text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)


def machine_info(args, script=os.path.join(ROOT, "tools", "benchmark.py")):
    """The ``info`` of tools/benchmark.py's output: machine, versions, the command and its options."""
    cpu = cpu_info()
    return OrderedDict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        command="python " + " ".join([os.path.relpath(os.path.abspath(script), ROOT)] + sys.argv[1:]),
        device=args.device,
        device_name=torch.cuda.get_device_name() if args.device == "cuda" else cpu["cpu"],
        cpu_count=os.cpu_count(),
        cpu_isa=cpu["flags"],
        cpu_flags=cpu["isa"],
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        torchvision=__import__("torchvision").__version__,
        size=list(args.size),
        runs=args.runs,
        warmup=args.warmup,
        candidate_fraction=args.candidate_fraction,
        torchvision_channels_last=bool(getattr(args, "torchvision_channels_last", False)),
    )


def _inference_lines(info, inference, s):
    h, w = info["size"]
    lines = [
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
    ]
    rows = []
    for r in inference:
        above = "n/a" if r["scores_above_threshold"] is None else f"{r['scores_above_threshold']:,} / {r['class_scores']:,}"
        det = "n/a" if r["detections"] is None else str(r["detections"])
        rows.append([r["model"], r["precision"], fmt(r["median_ms"]), fmt(r["min_ms"]), fmt(r["ratio_ours_over_this"], ".3f"),
                     fmt(r["paired_ratio"], ".3f"), above, det])
    header = ["model", "precision", "median ms", "min ms", "ours / this", "ours / this, per round", "scores above threshold", "detections"]
    lines += markdown_table(header, rows, "llrrrrrr") + [""]
    if s and s.get("precision") and s.get("ours_over_tv_fcos_fp32") is not None:
        p = s["precision"]
        line = (f"**Ours {p} / torchvision FCOS fp32: {fmt(s['ours_over_tv_fcos_fp32'], '.3f')}** "
                f"(per round {fmt(s['ours_over_tv_fcos_fp32_per_round'], '.3f')}); "
                f"ours {p} / ours fp32: {fmt(s['ours_over_ours_fp32'], '.3f')}.")
        if s.get("goal") is not None:
            verdict = "n/a" if s.get("goal_met") is None else ("met" if s["goal_met"] else "not met")
            line += f" Goal: at most {s['goal']:g}x: {verdict}."
        lines += [line, ""]
    if s and s.get("note"):
        lines += [s["note"] + ".", ""]
    return lines


def _train_lines(info, train):
    h, w = info["size"]
    method = next((r["memory_method"] for r in train if r.get("memory_method")), None)
    lines = [
        f"Training step (forward + backward + SGD), batch 2, {h}x{w}, 3-5 random boxes per image, median of "
        f"{info['runs']} interleaved rounds after {info['warmup']} warm-up (ratio = ours / this model). "
        f"Ours as tools/train_net.py trains it: channels_last (SOLVER.CHANNELS_LAST), frozen norms folded into "
        f"the convs, tower norms recomputed in the backward pass (MODEL.FCOS.RECOMPUTE_TOWER_NORM). "
        + (f"Peak memory: one child process per model, after one warm-up step; {method}; "
           "'held' = parameters + buffers + momentum; 'max RSS' = the child's peak resident set size "
           "(includes the Python and library footprint)." if method else "Peak memory: not measured."),
        "",
    ]
    header = ["model", "precision", "median ms", "min ms", "ours / this", "ours / this, per round", "peak step MiB", "held MiB",
              "peak total MiB", "ours / this (memory)", "max RSS MiB"]
    rows = []
    for r in train:
        rows.append([r["model"], r["precision"], fmt(r["median_ms"]), fmt(r["min_ms"]), fmt(r["ratio_ours_over_this"], ".3f"),
                     fmt(r["paired_ratio"], ".3f"), fmt(r["peak_step_mib"], ".0f"), fmt(r["held_mib"], ".0f"),
                     fmt(r["peak_total_mib"], ".0f"), fmt(r["memory_ratio_ours_over_this"], ".3f"), fmt(r["max_rss_mib"], ".0f")])
        if r.get("memory_error"):
            rows.append(f"|  | memory error: {r['memory_error']} | | | | | | | | | |")
    return lines + markdown_table(header, rows, "ll" + "r" * 9) + [""]


def _accuracy_lines(accuracy):
    red = accuracy["reduced_precision"]
    lines = [
        f"Accuracy of `{accuracy['weights']}` (config `{accuracy['config']}`) on {', '.join(accuracy['datasets'])}, "
        f"evaluated as tools/test_net.py evaluates it, in fp32 and with TEST.AMP True ({red}); COCO AP in points; "
        f"'seconds' = the whole evaluation (data loading, inference, COCO evaluation), for context only.",
        "",
    ]
    rows = []
    for label, run in accuracy["runs"].items():
        for name, m in run["metrics"].items():
            dtype = (run["autocast"] or "none") + (" (emulated)" if run.get("emulated") else "")
            aps = [fmt(100 * m[k] if m[k] is not None and m[k] >= 0 else None, ".2f") for k in COCO_AP_KEYS]
            rows.append([label, name, dtype, run["channels_last"], *aps, fmt(run["seconds"])])
    header = ["precision", "dataset", "autocast", "channels_last", *COCO_AP_KEYS, "seconds"]
    lines += markdown_table(header, rows, "llll" + "r" * (len(COCO_AP_KEYS) + 1))
    verdict = "met" if accuracy["goal_met"] else "not met"
    return lines + [
        "",
        f"**AP {red} - fp32: {accuracy['ap_difference_points']:+.2f} points** ({accuracy['datasets'][0]}); "
        f"goal: within {accuracy['goal_points']:g} points: {verdict}.",
        "",
    ]


def markdown(info, inference=None, train=None, ops=None, ops_note=None, inference_summary=None, accuracy=None, accuracy_note=None,
             deploy=None):
    """The markdown report of tools/benchmark.py: the machine, then a table per part that ran (``deploy``:
    :func:`fcos_core.benchmark.deploy.bench_deploy`'s result)."""
    lines = [
        f"Machine: {info['device_name']} ({info['device']}, {info['cpu_count']} cores, {info['cpu_isa'] or 'n/a'}); "
        f"threads {info['threads']}; torch {info['torch']}, torchvision {info['torchvision']}; {info['date']}.",
        f"Command: `{info['command']}`",
        "",
    ]
    if inference is not None:
        lines += _inference_lines(info, inference, inference_summary)
    if train is not None:
        lines += _train_lines(info, train)
    if accuracy is not None:
        lines += _accuracy_lines(accuracy)
    elif accuracy_note:
        lines += [f"Accuracy: {accuracy_note}", ""]
    if deploy is not None:
        from fcos_core.benchmark.deploy import deploy_lines  # it imports this module

        lines += deploy_lines(info, deploy)
    if ops is not None or ops_note:
        lines += [f"Ops: {ops_note}", ""]
        for title, rows in (ops or {}).items():
            lines += [f"{title}:", ""] + dict_table(rows) + [""]
    return "\n".join(lines).rstrip() + "\n"


def ops_markdown(info, nms_rows, focal_rows):
    """The markdown report of tools/benchmark_ops.py: the NMS table and the focal-loss table."""
    lines = [
        f"Device: {info['device_name']}; threads: {info['threads']}; torch {info['torch']}, "
        f"torchvision {info['torchvision']}; backends: ml_nms {info['backend_ml_nms']}, "
        f"focal loss {info['backend_focal']}.",
        "",
        f"ml_nms vs torchvision.ops.batched_nms ({NUM_CLASSES} classes, IoU {IOU_THRESHOLD}; median ms; "
        "ratio = ours / torchvision, below 1 is faster):",
        "",
    ]
    header = ["boxes", "ours legacy +1", "ours continuous", "torchvision", "ratio legacy", "ratio continuous", "continuous == torchvision"]
    rows = [[f"{r['boxes']:,}", f"{r['ours_legacy_ms']:.3f}", f"{r['ours_continuous_ms']:.3f}", f"{r['torchvision_ms']:.3f}",
             f"{r['ratio_legacy']:.3f}", f"{r['ratio_continuous']:.3f}", "yes" if r["continuous_equals_torchvision"] else "NO"]
            for r in nms_rows]
    lines += markdown_table(header, rows, "rrrrrrc")
    lines += [
        "",
        f"sigmoid focal loss forward + backward (gamma {GAMMA}, alpha {ALPHA}, sum) vs "
        "torchvision.ops.sigmoid_focal_loss (one-hot built inside its timing); median ms, extra peak MiB:",
        "",
    ]
    header = ["N x C", "ours ms", "torchvision ms", "time ratio", "ours extra peak", "torchvision extra peak", "memory ratio", "max grad diff"]
    rows = [[r["shape"], f"{r['ours_ms']:.2f}", f"{r['torchvision_ms']:.2f}", f"{r['time_ratio']:.3f}", f"{r['ours_extra_peak_mib']:.2f}",
             f"{r['torchvision_extra_peak_mib']:.2f}", f"{r['memory_ratio']:.3f}", f"{r['grad_max_abs_diff']:.1e}"] for r in focal_rows]
    lines += markdown_table(header, rows, "l" + "r" * 7)
    return "\n".join(lines)
