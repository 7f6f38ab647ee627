"""Row "dataset" of tools/benchmark_data.py: build time and memory of the COCO training dataset,
before (the pycocotools-backed :class:`~fcos_core.data.datasets.coco_reference.PycocotoolsCOCODataset`)
and after (:class:`~fcos_core.data.datasets.coco.COCODataset`'s compact records).

Each variant runs in a fresh child process (``python -m fcos_core.benchmark.dataset_memory --child
compact|pycocotools ANN_FILE ROOT WORKERS``) so that neither sees the other's memory:

- build time: wall seconds of the constructor (``remove_images_without_annotations=True``);
- memory per process: the growth of ``Pss`` and ``Private_Dirty`` of ``/proc/self/smaps_rollup``
  from before the construction to after it (``gc.collect()`` first), and the peak: ``VmHWM`` of
  /proc/self/status minus the resident set before (this includes the json's pages while read);
- worker growth: a DataLoader with WORKERS fork workers runs one epoch of ``dataset[i]`` (every
  index once, batches of 64); each worker reports its ``Private_Dirty`` when it starts
  (``worker_init_fn``) and after its last batch; the row gives the largest and the mean growth.
  Image decoding is stubbed: ``read_image_for_size`` is replaced by an object with the json's
  size, so the measurement is the metadata path only (index -> image info -> target BoxList).
"""
import argparse
import gc
import json
import subprocess
import sys
import time
import types

import numpy as np

from fcos_core.benchmark.data import register_row

_STATE = {}  # per worker process: Private_Dirty at its start


def smaps_rollup_mib():
    """{"Rss", "Pss", "Private_Dirty", ...} of /proc/self/smaps_rollup, in MiB."""
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024.0
    return out


def vm_hwm_mib():
    """Peak resident set size of this process (VmHWM of /proc/self/status), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _build(impl, ann_file, root):
    """(dataset, seconds to build it) for ``impl`` "compact" or "pycocotools" (imported beforehand)."""
    from fcos_core.data.datasets.coco import COCODataset
    from fcos_core.data.datasets.coco_reference import PycocotoolsCOCODataset

    cls = COCODataset if impl == "compact" else PycocotoolsCOCODataset
    start = time.perf_counter()
    dataset = cls(ann_file, root, remove_images_without_annotations=True)
    return dataset, time.perf_counter() - start


class _Epoch:
    """``dataset[i]`` reduced to the number of boxes; index -1 reports the worker's memory growth."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, index):
        if index < 0:
            return ("memory", _STATE["start"], smaps_rollup_mib()["Private_Dirty"])
        return len(self.dataset[index][1])

    def __len__(self):
        return len(self.dataset)


def _worker_start(_):
    _STATE["start"] = smaps_rollup_mib()["Private_Dirty"]


def _first(batch):
    return batch


def worker_growth(dataset, workers, batch_size=64):
    """Growth of each worker's Private_Dirty (MiB) over one epoch of ``dataset[i]`` (see the module docstring)."""
    import torch.utils.data

    n = len(dataset)
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    batches += [[-1]] * workers  # one each, in the loader's round-robin order: each worker's last batch
    loader = torch.utils.data.DataLoader(_Epoch(dataset), batch_sampler=batches, num_workers=workers,
                                         collate_fn=_first, worker_init_fn=_worker_start,
                                         multiprocessing_context="fork")
    growth, seen = [], 0
    for batch in loader:
        if isinstance(batch[0], tuple):
            growth.append(batch[0][2] - batch[0][1])
        else:
            seen += len(batch)
    if seen != n or len(growth) != workers:
        raise RuntimeError("epoch saw {} of {} images, {} of {} worker reports".format(seen, n, len(growth), workers))
    return growth


def child(impl, ann_file, root, workers):
    """The measurements of one variant in this (fresh) process, as a dict."""
    import fcos_core.data.datasets.coco as coco_module
    import fcos_core.data.datasets.coco_reference  # noqa: F401 (imported before the measurement)
    import fcos_core.data.datasets.json_stream  # noqa: F401 (orjson too)

    gc.collect()
    before, rss_before = smaps_rollup_mib(), smaps_rollup_mib()["Rss"]
    dataset, seconds = _build(impl, ann_file, root)
    gc.collect()
    after, peak = smaps_rollup_mib(), vm_hwm_mib()
    real_reader = coco_module.read_image_for_size
    coco_module.read_image_for_size = lambda path, size: (types.SimpleNamespace(size=tuple(size)), 0)
    try:
        growth = worker_growth(dataset, workers) if workers else [float("nan")]
    finally:
        coco_module.read_image_for_size = real_reader
    return {"dataset": {"compact": "COCODataset (compact records)",
                        "pycocotools": "PycocotoolsCOCODataset (before)"}[impl],
            "images": len(dataset), "build_s": seconds,
            "pss_mib": after["Pss"] - before["Pss"], "private_dirty_mib": after["Private_Dirty"] - before["Private_Dirty"],
            "peak_over_start_mib": peak - rss_before, "workers": workers,
            "worker_growth_max_mib": float(np.max(growth)), "worker_growth_mean_mib": float(np.mean(growth))}


def _add_arguments(parser):
    parser.add_argument("--ann-file", help="dataset row: COCO json (e.g. made by tools/make_coco_like.py)")
    parser.add_argument("--root", help="dataset row: image folder (default: images/ beside --ann-file)")
    parser.add_argument("--workers", type=int, default=4, help="dataset row: DataLoader workers (default 4)")
    parser.add_argument("--variants", default="pycocotools,compact",
                        help="dataset row: which to measure, comma separated (default %(default)s)")


@register_row("dataset", "COCO training dataset: build time, memory per process, worker growth per epoch",
              add_arguments=_add_arguments)
def dataset_rows(args):
    """One row per variant, each measured in a child process (see the module docstring)."""
    import os

    if not args.ann_file:
        raise SystemExit("the dataset row needs --ann-file (make one with tools/make_coco_like.py)")
    root = args.root or os.path.join(os.path.dirname(os.path.abspath(args.ann_file)), "images")
    rows = []
    for impl in args.variants.split(","):
        cmd = [sys.executable, "-m", "fcos_core.benchmark.dataset_memory", "--child", impl, args.ann_file, root,
               str(args.workers)]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="one variant of the dataset row, in this process")
    parser.add_argument("--child", choices=["compact", "pycocotools"], required=True)
    parser.add_argument("ann_file")
    parser.add_argument("root")
    parser.add_argument("workers", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(child(args.child, args.ann_file, args.root, args.workers)))


if __name__ == "__main__":
    main()
