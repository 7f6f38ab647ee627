"""Loader throughput: our training input pipeline against torchvision's reference detection transforms.

Ours (:class:`OursSample`): the dataset's image reading (``read_image_for_size`` of
fcos_core/data/datasets/image_io.py: PIL decode, EXIF, RGB) and ``build_transforms(cfg, is_train=True)``
of a config (by default configs/fcos/fcos_imprv_R_50_FPN_1x.yaml: Resize to 800 x 1333 on the PIL
image, RandomHorizontalFlip 0.5, ToTensor, Normalize to BGR 0-255 minus PIXEL_MEAN).

The peer (:class:`PeerSample`): what torchvision's references/detection trains with, built from
``torchvision.transforms.v2`` (references/detection/transforms.py is not installed with the package):
the image opened by PIL and converted to RGB as ``torchvision.datasets.CocoDetection`` does, boxes as
``tv_tensors.BoundingBoxes`` (XYXY), ``v2.ToImage``, ``v2.RandomHorizontalFlip``,
``v2.ToDtype(float32, scale=True)``; then what torchvision's model does in its
``GeneralizedRCNNTransform``, here with ``v2.functional``: ``normalize`` (the config's mean and std
in RGB 0-1 units, so that both pipelines compute the same numbers) and ``resize`` (bilinear,
no antialiasing, short side 800 capped at 1333 on the long side; boxes resized alike).

Measured (:func:`bench_loader`): images per second in one process with one thread (what a
DataLoader worker has), ours and the peer interleaved on the same images, with the ratio of the
times (and ours with INPUT.RESIZE_BACKEND "tensor", torch's uint8 resize instead of PIL's, and with
INPUT.RESIZE_STYLE "torchvision", which resizes the normalised tensor as the peer does); the time of
each stage of ours and of PIL's and torch's decode and resize; and images per second through a
``torch.utils.data.DataLoader`` (batch 2 per rank, the config's IMS_PER_BATCH 16 over 8 GPUs) for
each number of workers, in total and per worker. The JPEGs come from :func:`fcos_core.benchmark.loader_data.make_loader_jpegs`.
"""
import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import time
from collections import OrderedDict

import PIL
import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fcos_core.benchmark.data import register_row
from fcos_core.benchmark.loader_data import make_loader_jpegs
from fcos_core.benchmark.models import ROOT
from fcos_core.benchmark.report import cpu_info, fmt, markdown_table, write_outputs
from fcos_core.benchmark.timing import interleaved, paired_ratio
from fcos_core.config import load_config
from fcos_core.data.collate_batch import BatchCollator
from fcos_core.data.datasets.image_io import read_image_for_size
from fcos_core.data.transforms import Resize, build_transforms
from fcos_core.structures.bounding_box import BoxList

DEFAULT_CONFIG = os.path.join("configs", "fcos", "fcos_imprv_R_50_FPN_1x.yaml")
GOAL_IMAGES_PER_S = 8.0  # per rank with NUM_WORKERS 4: the original's ~61 images/s over 8 V100s


def _boxes(record):
    """Float Tensor[N, 4] (xyxy pixels) of a record's boxes."""
    return torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4)


class OursSample(object):
    """record (see loader_data) -> ``transforms(image, target)``: our dataset's reading and pipeline.

    The image is read as the COCO dataset reads it (``read_image_for_size``); the target is a BoxList
    (xyxy pixels) with a "labels" field. With ``build_transforms(cfg, True)`` the output is a float
    Tensor[3, H, W] (BGR 0-255 minus PIXEL_MEAN by default) and the resized, maybe flipped BoxList.
    """

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, record):
        image, _ = read_image_for_size(record["file_name"], (record["width"], record["height"]))
        target = BoxList(_boxes(record), image.size, mode="xyxy")
        target.add_field("labels", torch.tensor(record["labels"], dtype=torch.int64))
        return self.transforms(image, target)

    def __repr__(self):
        return "OursSample({!r})".format(self.transforms)


class PeerSample(object):
    """record -> (float Tensor[3, H, W] RGB, normalised, resized; ``{"boxes": BoundingBoxes XYXY, "labels"}``):
    torchvision's reference detection transforms plus its model's normalize and resize.

    Arguments:
        min_size, max_size (int): short side and cap on the long side, pixels.
        mean, std (3 floats): per channel, RGB, in 0-1 units (torchvision's convention).
        flip_prob (float): probability of the horizontal flip.
    """

    def __init__(self, min_size, max_size, mean, std, flip_prob=0.5):
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.transforms = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(flip_prob),
                                      v2.ToDtype(torch.float32, scale=True)])

    def __call__(self, record):
        with Image.open(record["file_name"]) as f:
            image = f.convert("RGB")  # as torchvision.datasets.CocoDetection reads an image
        boxes = tv_tensors.BoundingBoxes(_boxes(record), format="XYXY", canvas_size=(image.height, image.width))
        image, target = self.transforms(image, {"boxes": boxes, "labels": torch.tensor(record["labels"])})
        # GeneralizedRCNNTransform: normalise, then resize (bilinear, no antialiasing)
        image = TF.normalize(image, self.mean, self.std)
        image = TF.resize(image, [self.min_size], max_size=self.max_size, antialias=False)
        target["boxes"] = TF.resize(target["boxes"], [self.min_size], max_size=self.max_size)
        return image, target

    def __repr__(self):
        return "PeerSample(min_size={}, max_size={}, mean={}, std={}, {!r})".format(
            self.min_size, self.max_size, self.mean, self.std, self.transforms)


def make_samples(cfg, flip_prob=None):
    """(OursSample, PeerSample) for config ``cfg``: ours = ``build_transforms(cfg, True)``; the peer with
    the config's MIN_SIZE_TRAIN[0], MAX_SIZE_TRAIN and PIXEL_MEAN/STD in RGB 0-1 units (BGR 0-255
    ones reversed and divided by 255 under TO_BGR255), so both compute the same values.
    ``flip_prob`` (None: INPUT.HORIZONTAL_FLIP_PROB_TRAIN) overrides the flip of both."""
    if flip_prob is not None:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = float(flip_prob)
    mean, std = list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)
    if cfg.INPUT.TO_BGR255:
        mean, std = [v / 255.0 for v in mean[::-1]], [v / 255.0 for v in std[::-1]]
    peer = PeerSample(cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN, mean, std,
                      cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN)
    return OursSample(build_transforms(cfg, is_train=True)), peer


def peer_in_our_channels(image, to_bgr255):
    """The peer's RGB output Tensor[3, H, W] in our channel order (BGR when ``to_bgr255``)."""
    return image[[2, 1, 0]] if to_bgr255 else image


class RecordDataset(torch.utils.data.Dataset):
    """``dataset[i]`` = ``(*sample(records[i % len(records)]), i)`` for i < ``length`` (records reused)."""

    def __init__(self, records, sample, length=None):
        self.records, self.sample = records, sample
        self.length = len(records) if length is None else int(length)

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        image, target = self.sample(self.records[index % len(self.records)])
        return image, target, index


def peer_collate(batch):
    """torchvision references' ``collate_fn``: the list of samples as tuples, no padding (its model pads)."""
    return tuple(zip(*batch))


def in_process(samples, records, rounds, warmup, per_round):
    """Images per second of each ``samples`` entry (name -> callable(record)) in this process.

    Each round runs every sample on the same ``per_round`` records (the next ones, cycling), one
    after the other; ``warmup`` rounds are discarded. Returns ``{name: {"images_per_s", "ms_per_image",
    "times"}}`` (median over rounds) and the ratio of the times of "ours" and "peer" (two of the
    names) as ``ratio_*`` keys.
    """
    cursor = [0]

    def batch():
        start = cursor[0]
        return [records[(start + k) % len(records)] for k in range(per_round)]

    def run(sample):
        return lambda: [sample(r) for r in batch()]

    fns = OrderedDict((name, run(s)) for name, s in samples.items())
    fns["_advance"] = lambda: cursor.__setitem__(0, cursor[0] + per_round)
    times = interleaved(fns, rounds, warmup, "cpu")
    out = OrderedDict()
    for name in samples:
        med = statistics.median(times[name])
        out[name] = OrderedDict(images_per_s=per_round / med, ms_per_image=1e3 * med / per_round,
                                times=times[name])
    out["ratio_time_ours_over_peer"] = statistics.median(times["ours"]) / statistics.median(times["peer"])
    out["ratio_per_round"] = paired_ratio(times["ours"], times["peer"])
    return out


def stage_times(ours, records, repeat=2):
    """Median milliseconds per image of each stage of ``ours`` (OursSample) over ``records``: reading
    (decode, EXIF, RGB) and each transform of its Compose, named "<position>.<class name>"."""
    stages = OrderedDict()
    for _ in range(repeat):
        for record in records:
            start = time.perf_counter()
            image, _ = read_image_for_size(record["file_name"], (record["width"], record["height"]))
            target = BoxList(_boxes(record), image.size, mode="xyxy")
            stages.setdefault("read_image", []).append(time.perf_counter() - start)
            for k, t in enumerate(ours.transforms.transforms):
                start = time.perf_counter()
                image, target = t(image, target)
                stages.setdefault("{}.{}".format(k, type(t).__name__), []).append(time.perf_counter() - start)
    return OrderedDict((name, 1e3 * statistics.median(v)) for name, v in stages.items())


def alternative_times(records, size, repeat=2):
    """Median milliseconds per image of two ways to do ours' decode and resize, timed alternately on
    the same images: PIL (what ours does) and tensors (torchvision.io ``decode_jpeg``; uint8
    ``interpolate``, bilinear with antialiasing as PIL's) to ``size`` = (H, W) pixels."""
    fns = OrderedDict([
        ("decode: PIL (Image.open, load)", lambda r, pil, u: _pil_decode(r["file_name"])),
        ("decode: torchvision.io.decode_jpeg", lambda r, pil, u: decode_jpeg(read_file(r["file_name"]))),
        ("resize: PIL bilinear", lambda r, pil, u: pil.resize(size[::-1], Image.BILINEAR)),
        ("resize: uint8 tensor interpolate", lambda r, pil, u: torch.nn.functional.interpolate(
            u[None], size=size, mode="bilinear", antialias=True, align_corners=False)),
    ])
    times = OrderedDict((name, []) for name in fns)
    for _ in range(repeat):
        for record in records:
            pil, u = _pil_decode(record["file_name"]), decode_jpeg(read_file(record["file_name"]))
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(record, pil, u)
                times[name].append(time.perf_counter() - start)
    return OrderedDict((name, 1e3 * statistics.median(v)) for name, v in times.items())


def _pil_decode(path):
    """The decoded PIL image at ``path``."""
    with Image.open(path) as image:
        image.load()
        return image


def profile_text(sample, records, top=15):
    """cProfile of ``sample`` over ``records``: the ``top`` functions by own time, as pstats prints them."""
    profiler = cProfile.Profile()
    profiler.enable()
    for record in records:
        sample(record)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def through_dataloader(dataset, collate, workers, batch_size):
    """Images per second through ``torch.utils.data.DataLoader(dataset, batch_size, num_workers=workers,
    collate_fn=collate)`` (in order, no shuffling), the main process only taking the batches.

    The clock starts when the first ``workers`` batches (each worker's first, which includes its
    start-up) have arrived; the images of the batches after them are counted. Returns
    ``{"workers", "images", "seconds", "images_per_s", "images_per_s_per_worker"}``.
    """
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate, shuffle=False)
    it, images, start = iter(loader), 0, None
    for k, batch in enumerate(it):
        if k + 1 == max(workers, 1):
            start = time.perf_counter()
        elif start is not None:
            images += len(batch[1])
    seconds = time.perf_counter() - start if start is not None else float("nan")
    rate = images / seconds if images else float("nan")
    return OrderedDict(workers=workers, images=images, seconds=seconds, images_per_s=rate,
                       images_per_s_per_worker=rate / max(workers, 1))


def _with(cfg, key, value):
    """A copy of ``cfg`` with INPUT.<key> = value."""
    c = cfg.clone()
    c.defrost()
    c.INPUT[key] = value
    return c


def pipelines(cfg):
    """The timed pipelines (name -> callable(record)): "ours" and "peer" (:func:`make_samples`), and ours
    with the keys that change how the image is resized: INPUT.RESIZE_BACKEND "tensor" (the same sizes,
    torch's uint8 resize) and INPUT.RESIZE_STYLE "torchvision" (the normalised tensor resized, as the peer)."""
    ours, peer = make_samples(cfg)
    return OrderedDict([("ours", ours), ("peer", peer),
                        ("ours_resize_backend_tensor", make_samples(_with(cfg, "RESIZE_BACKEND", "tensor"))[0]),
                        ("ours_resize_style_torchvision", make_samples(_with(cfg, "RESIZE_STYLE", "torchvision"))[0])])


def dataloader_rows(cfg, records, samples, workers, loader_images, log):
    """:func:`through_dataloader` rows of every ``samples`` entry for every number of ``workers``: batch 2
    (the config's IMS_PER_BATCH over 8 GPUs when that divides); ours collated by our BatchCollator
    (padded to DATALOADER.SIZE_DIVISIBILITY), the peer by torchvision references' collate_fn."""
    ims = cfg.SOLVER.IMS_PER_BATCH
    batch = ims // 8 if ims % 8 == 0 and ims >= 8 else 2
    ours_collate = BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY)
    rows = []
    for n in workers:
        for name, sample in samples.items():
            collate = peer_collate if name == "peer" else ours_collate
            row = through_dataloader(RecordDataset(records, sample, loader_images), collate, n, batch)
            rows.append(OrderedDict([("pipeline", name), ("batch", batch)] + list(row.items())))
            log("DataLoader {} workers {}: {:.1f} images/s ({:.1f} per worker)".format(
                name, n, row["images_per_s"], row["images_per_s_per_worker"]))
    return rows


def bench_loader(cfg, records, rounds=5, warmup=1, per_round=20, workers=(1, 2, 4), loader_images=160,
                 threads=1, log=print):
    """The loader benchmark of ``cfg`` (a training config) on ``records`` (see loader_data).

    ``threads``: torch threads of the in-process rows (1, as in a DataLoader worker);
    ``loader_images``: images per DataLoader run. ``log`` gets a line per finished part. Returns an
    OrderedDict with ``in_process`` (see :func:`in_process`, every one of :func:`pipelines`),
    ``stages`` (ms per image of ours' steps), ``alternatives`` (:func:`alternative_times`),
    ``dataloader`` (:func:`dataloader_rows` of ours, the peer and ours with RESIZE_BACKEND "tensor")
    and ``goal``.
    """
    torch.set_num_threads(threads)
    random.seed(0)
    timed = pipelines(cfg)
    result = OrderedDict(pipelines=OrderedDict((k, repr(v)) for k, v in timed.items()))
    ip = result["in_process"] = in_process(timed, records, rounds, warmup, per_round)
    log("in one process (images/s): " + ", ".join("{} {:.1f}".format(k, ip[k]["images_per_s"]) for k in timed)
        + "; time ratio ours/peer {:.2f}".format(ip["ratio_time_ours_over_peer"]))
    result["stages"] = stage_times(timed["ours"], records[:per_round])
    log("stages of ours (ms per image): " + ", ".join("{} {:.2f}".format(k, v) for k, v in result["stages"].items()))
    # (H, W) of the first image after the original's resize rule (800 x 1066 for 640 x 480)
    size = Resize(cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN).get_size(
        (records[0]["width"], records[0]["height"]))
    result["alternatives"] = alternative_times(records[:per_round], tuple(size))
    result["alternatives_size"] = list(size)
    loaded = OrderedDict((k, timed[k]) for k in ("ours", "peer", "ours_resize_backend_tensor"))
    rows = result["dataloader"] = dataloader_rows(cfg, records, loaded, workers, loader_images, log)
    four = [r["images_per_s"] for r in rows if r["pipeline"] == "ours" and r["workers"] == 4]
    result["goal"] = OrderedDict(images_per_s_with_4_workers=GOAL_IMAGES_PER_S,
                                 measured=four[0] if four else None,
                                 met=bool(four) and four[0] >= GOAL_IMAGES_PER_S)
    return result


def loader_markdown(result):
    """Markdown lines of a :func:`bench_loader` result (with its ``info``)."""
    info, ip = result["info"], result["in_process"]
    lines = ["CPU: {} ({} CPUs; {}); torch {}, torchvision {}, Pillow {}; command: `{}`".format(
        info["cpu"], info["cpus"], info["flags"], info["torch"], info["torchvision"], info["pillow"],
        info["command"]), ""]
    lines += markdown_table(
        ["pipeline (one process, {} thread)".format(info["threads"]), "images/s", "ms/image"],
        [[name, fmt(ip[name]["images_per_s"]), fmt(ip[name]["ms_per_image"], ".2f")]
         for name in ip if isinstance(ip[name], dict)],
        "lrr")
    lines += ["", "Time ratio ours / peer: {} (median per round {}; below 1: ours is faster).".format(
        fmt(ip["ratio_time_ours_over_peer"], ".2f"), fmt(ip["ratio_per_round"], ".2f")), ""]
    lines += markdown_table(["stage of ours", "ms/image"],
                            [[k, fmt(v, ".2f")] for k, v in result["stages"].items()], "lr")
    lines.append("")
    lines += markdown_table(["alternative (to {} x {})".format(*result["alternatives_size"]), "ms/image"],
                            [[k, fmt(v, ".2f")] for k, v in result["alternatives"].items()], "lr")
    lines.append("")
    note = " ({} CPUs: more workers than cores share them)".format(info["cpus"])
    rows = [[r["pipeline"], "{}{}".format(r["workers"], note if r["workers"] > (info["cpus"] or 1) else ""),
             r["batch"], r["images"], fmt(r["images_per_s"]), fmt(r["images_per_s_per_worker"])]
            for r in result["dataloader"]]
    lines += markdown_table(["pipeline", "NUM_WORKERS", "batch", "images timed", "images/s", "images/s per worker"],
                            rows, "llrrrr")
    goal = result["goal"]
    lines += ["", "Goal: at least {} images/s per rank with NUM_WORKERS 4: {} ({}).".format(
        fmt(goal["images_per_s_with_4_workers"]), "met" if goal["met"] else "NOT met", fmt(goal["measured"]))]
    return lines


def _row_arguments(parser):
    """The row's options in tools/benchmark_data.py (prefixed: the script has other rows)."""
    parser.add_argument("--loader-images-dir", default=os.path.join(ROOT, "output", "loader_jpegs"),
                        help="loader: where the 640 x 480 JPEGs are made (reused)")
    parser.add_argument("--loader-count", type=int, default=200, help="loader: JPEGs")
    parser.add_argument("--loader-rounds", type=int, default=5, help="loader: timed rounds in one process")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[1, 2, 4], help="loader: NUM_WORKERS values")
    parser.add_argument("--loader-dataloader-images", type=int, default=160, help="loader: images per DataLoader run")


@register_row("loader", "Loader throughput: our training pipeline against torchvision's reference detection "
              "transforms (images/s; one process with 1 thread, and a DataLoader per NUM_WORKERS)",
              add_arguments=_row_arguments)
def loader_rows(args):
    """The benchmark_data row: one dict per pipeline in one process and per (pipeline, NUM_WORKERS)."""
    records = make_loader_jpegs(args.loader_images_dir, args.loader_count)
    result = bench_loader(load_config(os.path.join(ROOT, DEFAULT_CONFIG)), records, args.loader_rounds,
                          workers=tuple(args.loader_workers), loader_images=args.loader_dataloader_images,
                          log=lambda s: print(s, file=sys.stderr, flush=True))
    ip, rows = result["in_process"], []
    for name in result["pipelines"]:
        rows.append(OrderedDict(pipeline=name, where="one process, 1 thread", workers="", images_per_s=ip[name][
            "images_per_s"], images_per_s_per_worker=ip[name]["images_per_s"],
            time_over_peer=ip[name]["ms_per_image"] / ip["peer"]["ms_per_image"]))
    for r in result["dataloader"]:
        rows.append(OrderedDict(pipeline=r["pipeline"], where="DataLoader, batch {}".format(r["batch"]),
                                workers=r["workers"], images_per_s=r["images_per_s"],
                                images_per_s_per_worker=r["images_per_s_per_worker"], time_over_peer=""))
    return rows


def add_arguments(parser):
    """The loader benchmark's options on argparse ``parser``."""
    parser.add_argument("--config-file", default=os.path.join(ROOT, DEFAULT_CONFIG), help="training config")
    parser.add_argument("--images-dir", default=os.path.join(ROOT, "output", "loader_jpegs"),
                        help="where the JPEGs are made (reused when made with the same options)")
    parser.add_argument("--count", type=int, default=200, help="JPEGs (640 x 480, quality 90)")
    parser.add_argument("--rounds", type=int, default=5, help="timed interleaved rounds in one process")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds")
    parser.add_argument("--per-round", type=int, default=20, help="images per pipeline per round")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="DataLoader NUM_WORKERS values")
    parser.add_argument("--loader-images", type=int, default=160, help="images per DataLoader run")
    parser.add_argument("--profile", action="store_true", help="also print cProfile of both pipelines")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the markdown")
    return parser


def run(args, command):
    """Make the JPEGs, run :func:`bench_loader` with ``args`` (see :func:`add_arguments`), print
    the markdown (and the profiles with ``--profile``), write ``--json`` / ``--markdown``."""
    cfg = load_config(args.config_file)
    records = make_loader_jpegs(args.images_dir, args.count)
    print("{} JPEGs in {}".format(len(records), args.images_dir), flush=True)
    result = bench_loader(cfg, records, args.rounds, args.warmup, args.per_round, tuple(args.workers),
                          args.loader_images, log=lambda s: print(s, flush=True))
    result["info"] = OrderedDict(list(cpu_info().items()) + [
        ("threads", torch.get_num_threads()), ("torch", torch.__version__),
        ("torchvision", torchvision.__version__), ("pillow", PIL.__version__), ("command", command)])
    if args.profile:
        ours, peer = make_samples(cfg)
        for name, sample in (("ours", ours), ("peer", peer)):
            print("cProfile of {} over {} images:\n{}".format(name, args.per_round,
                                                             profile_text(sample, records[:args.per_round])))
    write_outputs("\n".join(loader_markdown(result)) + "\n", result, args.markdown, args.json)
    return result


def main(argv=None):
    """Command line of the loader benchmark alone: ``python -m fcos_core.benchmark.loader [options]``."""
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    return run(args, "python -m fcos_core.benchmark.loader " + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
