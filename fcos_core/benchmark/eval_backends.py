"""COCO evaluation time of the two TEST.COCO_EVAL_BACKEND choices on a COCO-val-sized problem.

The problem (seeded, made in memory, nothing written): ``--images`` images (default 5,000, COCO
val 2017's count) of COCO's common sizes, on average 7.3 ground-truth boxes each (COCO val: 36,781
boxes on 5,000 images) of 80 categories, areas spread over small / medium / large, 1% crowd; and
exactly ``--detections`` detections per image (default 100, TEST.DETECTIONS_PER_IMG): up to 3
jittered copies of each ground-truth box (80% with its class) and random boxes, half of them in
the image's ground-truth classes and half in any class (about 38 classes per image in all), scores
in (0, 1).

Each backend runs :func:`~fcos_core.data.datasets.evaluation.coco.coco_eval.evaluate_predictions_on_coco`
as the evaluation after inference runs it (load the results, evaluate, accumulate, summarize; the
ground truth is a pycocotools COCO built once, outside the timing, as the dataset holds it). One
process, one thread of Python; rounds interleaved (pycocotools, faster_coco_eval, pycocotools, ...);
the median of ``--rounds`` is reported with the ratio faster / pycocotools (goal: at most 0.15) and
the largest difference of the twelve numbers between the two.

``python -m fcos_core.benchmark.eval_backends [--images N] [--detections K] [--rounds R] [--json PATH]``,
or the row ``coco_eval`` of ``tools/benchmark_data.py`` (options ``--eval-images`` etc.).
"""
import argparse
import contextlib
import io
import logging
import platform
import statistics
import sys
from collections import OrderedDict

import numpy as np
from pycocotools.coco import COCO

from fcos_core.benchmark.data import register_row
from fcos_core.benchmark.report import cpu_info, write_outputs
from fcos_core.benchmark.timing import interleaved, paired_ratio
from fcos_core.data.datasets.evaluation.coco.backends import backend_version, resolve_backend
from fcos_core.data.datasets.evaluation.coco.coco_eval import evaluate_predictions_on_coco

GOAL_RATIO = 0.15
SIZES = ((640, 480), (480, 640), (640, 427), (500, 375), (640, 360))


def _boxes(rng, n, width, height):
    """[n, 4] xywh boxes inside the image: sides log-uniform in 4..0.9*min(W, H) pixels (about
    4 small : 3 medium : 3 large areas, close to COCO's 41% / 34% / 24%)."""
    side = np.exp(rng.uniform(np.log(4), np.log(0.9 * min(width, height)), n))
    w, h = side * rng.uniform(0.6, 1.4, n), side * rng.uniform(0.6, 1.4, n)
    w, h = np.minimum(w, width - 1), np.minimum(h, height - 1)
    x, y = rng.uniform(0, 1, n) * (width - w), rng.uniform(0, 1, n) * (height - h)
    return np.stack([x, y, w, h], 1)


def make_problem(num_images=5000, dets_per_image=100, num_classes=80, seed=0):
    """(ground-truth COCO json dict, list of COCO-format detections) as the module docstring says."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = SIZES[int(rng.integers(len(SIZES)))]
        images.append({"id": image_id, "file_name": "{:012d}.jpg".format(image_id), "width": width, "height": height})
        gt = _boxes(rng, int(rng.poisson(7.3)), width, height)
        cats = rng.integers(1, num_classes + 1, len(gt))
        for box, cat in zip(gt.tolist(), cats.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": int(rng.random() < 0.01)})
        dets.extend(_detections(rng, image_id, gt, cats, dets_per_image, num_classes, width, height))
    categories = [{"id": c, "name": "class_{}".format(c)} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def _detections(rng, image_id, gt, cats, count, num_classes, width, height):
    """``count`` detections of one image: up to 3 jittered copies per gt box, then random boxes
    (half in the image's gt classes, half in any class)."""
    copies = np.repeat(np.arange(len(gt)), 3)[:count]
    jitter = rng.normal(0, 0.1, (len(copies), 4)) * np.repeat(gt[copies, 2:].max(1, keepdims=True), 4, 1)
    near = gt[copies] + jitter
    near[:, 2:] = np.maximum(near[:, 2:], 1)
    near_cats = np.where(rng.random(len(copies)) < 0.8, cats[copies], rng.integers(1, num_classes + 1, len(copies)))
    boxes = np.concatenate([near, _boxes(rng, count - len(copies), width, height)])
    others = count - len(copies)
    any_class = rng.integers(1, num_classes + 1, others)
    gt_class = cats[rng.integers(0, len(cats), others)] if len(cats) else any_class
    labels = np.concatenate([near_cats, np.where(rng.random(others) < 0.5, gt_class, any_class)])
    scores = np.concatenate([rng.uniform(0.2, 1, len(copies)), rng.uniform(0.01, 0.6, count - len(copies))])
    return [{"image_id": image_id, "category_id": int(c), "bbox": [round(v, 2) for v in b], "score": round(float(s), 3)}
            for b, c, s in zip(boxes.tolist(), labels.tolist(), scores.tolist())]


def bench_eval_backends(num_images=5000, dets_per_image=100, rounds=3, warmup=0, seed=0, log=print):
    """Time both backends on :func:`make_problem` (see the module docstring).

    Returns:
        dict: "problem" (images, gt boxes, detections), "backends" {name: {"version", "seconds" [rounds],
        "median_s", "stats" [12]}}, "ratio_faster_over_pycocotools" (of the medians), "ratio_per_round",
        "max_abs_stats_difference", "goal" {"ratio", "met"}.
    """
    gt_json, dets = make_problem(num_images, dets_per_image, seed=seed)
    log("problem: {} images, {} ground-truth boxes, {} detections".format(
        len(gt_json["images"]), len(gt_json["annotations"]), len(dets)))
    coco_gt = COCO()
    coco_gt.dataset = gt_json
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    names = ("pycocotools", resolve_backend("faster_coco_eval"))
    stats = {}

    def timed(name):
        def fn():
            stats[name] = evaluate_predictions_on_coco(coco_gt, dets, None, "bbox", backend=name).stats.tolist()
            log("  {}: AP {:.4f}".format(name, stats[name][0]))
        return fn

    times = interleaved(OrderedDict((n, timed(n)) for n in names), rounds, warmup, "cpu")
    backends = OrderedDict((n, {"version": backend_version(n), "seconds": times[n], "median_s": statistics.median(times[n]),
                                "stats": stats[n]}) for n in names)
    ratio = backends["faster_coco_eval"]["median_s"] / backends["pycocotools"]["median_s"]
    return OrderedDict(
        problem={"images": num_images, "gt_boxes": len(gt_json["annotations"]), "detections": len(dets),
                 "detections_per_image": dets_per_image, "seed": seed},
        backends=backends, ratio_faster_over_pycocotools=ratio,
        ratio_per_round=paired_ratio(times["faster_coco_eval"], times["pycocotools"]),
        max_abs_stats_difference=float(np.abs(np.subtract(stats["pycocotools"], stats["faster_coco_eval"])).max()),
        goal={"ratio": GOAL_RATIO, "met": ratio <= GOAL_RATIO})


def eval_markdown(result):
    """Markdown lines of a :func:`bench_eval_backends` result with its ``info``."""
    info, p, b = result["info"], result["problem"], result["backends"]
    lines = ["CPU: {} ({} CPUs; {}); python {}; command: `{}`".format(
        info["cpu"], info["cpus"], info["flags"], info["python"], info["command"]), "",
        "| COCO evaluation of {:,} images x {} detections ({:,} gt boxes) | version | median s | AP |".format(
            p["images"], p["detections_per_image"], p["gt_boxes"]),
        "|---|---|---:|---:|"]
    for name, r in b.items():
        lines.append("| {} | {} | {:.2f} | {:.4f} |".format(name, r["version"], r["median_s"], r["stats"][0]))
    lines += ["", "Time faster_coco_eval / pycocotools: {:.3f} (median per round {:.3f}; goal at most {}: {}); "
              "largest difference of the 12 numbers: {:.1e}.".format(
                  result["ratio_faster_over_pycocotools"], result["ratio_per_round"], result["goal"]["ratio"],
                  "met" if result["goal"]["met"] else "NOT met", result["max_abs_stats_difference"])]
    return lines


def _row_arguments(parser):
    """The row's options in tools/benchmark_data.py (prefixed: the script has other rows)."""
    parser.add_argument("--eval-images", type=int, default=5000, help="coco_eval: images (COCO val: 5,000)")
    parser.add_argument("--eval-detections", type=int, default=100, help="coco_eval: detections per image")
    parser.add_argument("--eval-rounds", type=int, default=3, help="coco_eval: timed interleaved rounds")
    parser.add_argument("--eval-seed", type=int, default=0, help="coco_eval: seed of the problem")


@register_row("coco_eval", "COCO evaluation time: pycocotools against faster-coco-eval (TEST.COCO_EVAL_BACKEND)",
              add_arguments=_row_arguments)
def coco_eval_rows(args):
    """The benchmark_data row: one dict per backend (time, ratio to pycocotools, AP, agreement)."""
    logging.getLogger("fcos_core").setLevel(logging.WARNING)
    result = bench_eval_backends(args.eval_images, args.eval_detections, args.eval_rounds, seed=args.eval_seed,
                                 log=lambda s: print(s, file=sys.stderr, flush=True))
    p, ref = result["problem"], result["backends"]["pycocotools"]
    rows = []
    for name, r in result["backends"].items():
        rows.append(OrderedDict(
            backend=name, version=r["version"], images=p["images"], detections=p["detections"],
            rounds_s=", ".join("{:.1f}".format(t) for t in r["seconds"]), median_s=r["median_s"],
            ratio_to_pycocotools=r["median_s"] / ref["median_s"],
            ratio_per_round=1.0 if name == "pycocotools" else result["ratio_per_round"], AP=r["stats"][0],
            max_abs_stats_difference=float(np.abs(np.subtract(r["stats"], ref["stats"])).max()),
            goal="" if name == "pycocotools" else "<= {}: {}".format(GOAL_RATIO, "met" if result["goal"]["met"]
                                                                   else "NOT met")))
    return rows


def add_arguments(parser):
    """The evaluation benchmark's options on argparse ``parser``."""
    parser.add_argument("--images", type=int, default=5000, help="images (COCO val: 5,000)")
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--rounds", type=int, default=3, help="timed interleaved rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser


def run(args, command):
    """Run :func:`bench_eval_backends` with ``args`` (see :func:`add_arguments`), print the markdown,
    write ``--json``; returns the result."""
    logging.getLogger("fcos_core").setLevel(logging.WARNING)  # the evaluators' summaries, 2 x rounds
    result = bench_eval_backends(args.images, args.detections, args.rounds, seed=args.seed,
                                 log=lambda s: print(s, flush=True))
    result["info"] = OrderedDict(list(cpu_info().items()) + [("python", platform.python_version()),
                                                              ("command", command)])
    write_outputs("\n".join(eval_markdown(result)), result, json_path=args.json)
    return result


def main(argv=None):
    """``python -m fcos_core.benchmark.eval_backends [options]``."""
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    return run(args, "python -m fcos_core.benchmark.eval_backends " + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
