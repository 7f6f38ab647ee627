"""A table of the final evaluations of several training runs, to compare recipes side by side.

Each run is an OUTPUT_DIR of ``tools/train_net.py``: the test at the end of training writes
``<run>/inference/<dataset>/coco_results.json`` (``{"bbox": {"AP": ..., "AP50": ..., ...}}``, COCO
metrics as fractions) for each name of DATASETS.TEST, and the log ``<run>/log.txt`` holds the line
``Total training time: H:MM:SS (S s / it)``. Used by ``tools/compare_runs.py`` for the tables of
docs/augmentation.md (AP on ``shapes_val`` against AP on the second renderer's
``shapes_val_variant``).
"""
import json
import os
import re

from fcos_core.config.paths_catalog import results_folder_name

TRAINING_TIME = re.compile(r"Total training time: (\S+) \(([0-9.]+) s / it\)")


def read_metrics(run_dir, dataset, iou_type="bbox"):
    """{metric: float} of ``<run_dir>/inference/<dataset>/coco_results.json`` for ``iou_type``.

    Raises FileNotFoundError (naming the file) when the run has no such evaluation, ValueError when
    the file is not a COCO results json of ``iou_type``.
    """
    path = os.path.join(run_dir, "inference", results_folder_name(dataset), "coco_results.json")
    if not os.path.isfile(path):
        raise FileNotFoundError("{}: no evaluation of {} (is the run finished, and was {} in DATASETS.TEST?)".format(
            path, dataset, dataset))
    with open(path) as f:
        try:
            results = json.load(f)
        except ValueError as e:
            raise ValueError("{}: not valid json ({})".format(path, e)) from None
    if not isinstance(results, dict) or not isinstance(results.get(iou_type), dict):
        raise ValueError("{}: no '{}' results in it".format(path, iou_type))
    return results[iou_type]


def read_training_time(run_dir):
    """(total "H:MM:SS", seconds per iteration) of the last "Total training time" line of
    ``<run_dir>/log.txt``, or None when the log or the line is missing."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        return None
    with open(path, errors="replace") as f:
        found = TRAINING_TIME.findall(f.read())
    return (found[-1][0], float(found[-1][1])) if found else None


def summarize_runs(run_dirs, datasets, metrics=("AP", "AP50")):
    """One row per run: ``{"run", "values": {(dataset, metric): float or None}, "time", "missing"}``.

    A missing or unreadable evaluation leaves its values None and its message in "missing" (a list
    of str naming the file), so that a table of runs still in progress can be printed.
    """
    rows = []
    for run_dir in run_dirs:
        values, missing = {}, []
        for dataset in datasets:
            try:
                found = read_metrics(run_dir, dataset)
            except (OSError, ValueError) as e:
                found, missing = {}, missing + [str(e)]
            for metric in metrics:
                values[(dataset, metric)] = found.get(metric)
        rows.append({"run": run_dir, "values": values, "time": read_training_time(run_dir), "missing": missing})
    return rows


def _cell(value):
    return "n/a" if value is None else "{:.3f}".format(value)


def format_table(rows, datasets, metrics=("AP", "AP50")):
    """Markdown lines: run, each (dataset, metric), the first metric of each further dataset as a
    fraction of the first dataset's ("variant / val" style), and the training time."""
    header = ["run"] + ["{} {}".format(d, m) for d in datasets for m in metrics]
    header += ["{} / {} {}".format(d, datasets[0], metrics[0]) for d in datasets[1:]] + ["training time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        cells = [os.path.basename(os.path.normpath(row["run"])) or row["run"]]
        cells += [_cell(row["values"][(d, m)]) for d in datasets for m in metrics]
        base = row["values"][(datasets[0], metrics[0])]
        for d in datasets[1:]:
            value = row["values"][(d, metrics[0])]
            cells.append("n/a" if value is None or not base else "{:.2f}".format(value / base))
        cells.append("n/a" if row["time"] is None else "{} ({:.3f} s/it)".format(*row["time"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines
