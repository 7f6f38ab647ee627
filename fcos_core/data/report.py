"""A dataset report before training: classes, empty images, skipped annotations, and object sizes
at the training scale against the FPN levels of FCOS.

Everything comes from the annotations (no image is decoded, unless ``check_images`` asks to count
the unreadable ones). FCOS (Sec. 3.2) gives a location of level l the boxes whose largest
regression distance max(l*, t*, r*, b*) lies in (m_{l-1}, m_l], with m = (0, SIZES_OF_INTEREST...,
inf). The report measures each box by that distance at its centre, ``max(x2 - x1, y2 - y1) / 2``
(xyxy pixels after the training resize): the level whose range holds it is the level that learns
the box (off-centre locations have larger distances, up to ``max(w, h)``, but centre sampling keeps
the positives near the centre). A box whose long side is shorter than the smallest stride covers
less than one location of the finest level; a half size past the last boundary leaves only the
coarsest level. ``tools/browse_dataset.py`` writes the report as report.txt, report.json and
report.png (:func:`write_report`).
"""
import json
import math
import os

import numpy as np
from tqdm import tqdm

from .browse import check_split, class_names_of, datasets_of_split
from .datasets import ConcatDataset, data_skip_counts
from .transforms.build import train_min_sizes
from .transforms.transforms import Resize

SIZE_MEASURE = ("max(x2 - x1, y2 - y1) / 2 of the xyxy box after the resize: the largest regression "
                "distance max(l, t, r, b) at the box centre (FCOS Sec. 3.2)")
OUTSIDE_WARN_FRACTION = 0.5  # warn when more of the boxes than this are outside the useful range
ONE_LEVEL_WARN_FRACTION = 0.9  # warn when one level gets more of the boxes than this


# ----------------------------------------------------------------------------- boxes from annotations
def image_boxes(dataset, index, drop_difficult=False):
    """(boxes float64 [N, 4] xyxy in pixels of the annotated image size, labels int64 [N]) of image
    ``index``, without reading the image, from the dataset's ``get_groundtruth`` (COCO and VOC;
    with ``drop_difficult`` the boxes flagged "difficult" are left out, as training does). Works
    through ConcatDataset."""
    if isinstance(dataset, ConcatDataset):
        which, inner = dataset.get_idxs(index)
        return image_boxes(dataset.datasets[which], inner, drop_difficult)
    if hasattr(dataset, "get_groundtruth"):
        target = dataset.get_groundtruth(index).convert("xyxy")
        boxes, labels = target.bbox.double().numpy(), target.get_field("labels").numpy()
        if drop_difficult and "difficult" in target.fields():
            keep = ~target.get_field("difficult").numpy().astype(bool)
            boxes, labels = boxes[keep], labels[keep]
        return boxes, labels
    raise TypeError("{} gives no boxes without reading its images (no get_groundtruth)"
                    .format(type(dataset).__name__))


def collect_annotations(dataset, drop_difficult=False):
    """All boxes of ``dataset`` from its annotations.

    Returns:
        dict: "image_wh" int [I, 2] (width, height as annotated), "box_image" int [N] (index of each
        box's image), "box_wh" float [N, 2] (x2 - x1, y2 - y1 in pixels), "labels" int [N].
    """
    image_wh, box_image, box_wh, labels = [], [], [], []
    for index in tqdm(range(len(dataset)), desc="annotations", disable=None):
        info = dataset.get_img_info(index)
        image_wh.append((int(info["width"]), int(info["height"])))
        boxes, box_labels = image_boxes(dataset, index, drop_difficult)
        box_image.extend([index] * len(boxes))
        box_wh.extend((boxes[:, 2:] - boxes[:, :2]).tolist())
        labels.extend(box_labels.tolist())
    return {"image_wh": np.asarray(image_wh, np.int64).reshape(-1, 2), "box_image": np.asarray(box_image, np.int64),
            "box_wh": np.asarray(box_wh, np.float64).reshape(-1, 2), "labels": np.asarray(labels, np.int64)}


def count_unreadable_images(dataset):
    """Decode every image once (with tqdm progress), so that ``data_skip_counts(dataset)`` holds the
    unreadable ones (the datasets count them as they read)."""
    for index in tqdm(range(len(dataset)), desc="reading images", disable=None):
        try:
            dataset[index]
        except RuntimeError:  # no image of the dataset can be read: all counted by now
            break


# ----------------------------------------------------------------------------- sizes against levels
def level_ranges(boundaries):
    """[(low, high)] per level from MODEL.FCOS.SIZES_OF_INTEREST ``boundaries`` (m_1 < ... < m_{L-1}):
    (0, m_1], (m_1, m_2], ..., (m_{L-1}, inf). ValueError for boundaries that do not increase."""
    inner = [float(b) for b in boundaries]
    if any(b <= 0 for b in inner) or any(lo >= hi for lo, hi in zip(inner, inner[1:])):
        raise ValueError("MODEL.FCOS.SIZES_OF_INTEREST must be positive and increasing, got {}".format(
            list(boundaries)))
    edges = [0.0] + inner + [math.inf]
    return list(zip(edges[:-1], edges[1:]))


def level_names(strides):
    """"P3", "P4", ... for FPN_STRIDES (8, 16, ...): P<log2 stride>."""
    return ["P{}".format(int(round(math.log2(s)))) for s in strides]


def training_scales(min_sizes, max_size, scale_jitter=(1.0, 1.0), crop=None):
    """The two ends of the training zoom: [{"short_side", "max_size", "crop"}], the smallest first
    (one entry when both ends are the same).

    Smallest: the smallest of ``min_sizes`` times the low jitter factor, without crop. Largest: the
    largest times the high factor, and with ``crop`` (the smallest (height, width) fractions of
    INPUT.CROP_SIZE_TRAIN when cropping is on, else None) the crop, which the resize then enlarges.
    ``max_size`` scales with the jitter factor, as :class:`Resize` does.
    """
    low, high = (float(v) for v in scale_jitter)
    ends = [{"short_side": max(1, int(round(min(min_sizes) * low))), "max_size": max_size * low, "crop": None},
            {"short_side": max(1, int(round(max(min_sizes) * high))), "max_size": max_size * high,
             "crop": [float(v) for v in crop] if crop is not None else None}]
    return ends[:1] if ends[0] == ends[1] else ends


def training_scale_sizes(box_wh, box_image, image_wh, short_side, max_size, crop=None):
    """Each box's (width, height) after the resize of its image to ``short_side`` (long side at most
    ``max_size``), by :meth:`Resize.get_size`'s rule; with ``crop`` = (fh, fw) the image is first
    cropped to round(fh * height) x round(fw * width) (boxes kept whole). Float [N, 2] pixels."""
    resize = Resize((int(short_side),), max_size)
    scale = np.empty((len(image_wh), 2), np.float64)
    for i, (w, h) in enumerate(image_wh.tolist()):
        if crop is not None:
            w, h = max(1, int(round(w * crop[1]))), max(1, int(round(h * crop[0])))
        new_h, new_w = resize.get_size((w, h))
        scale[i] = (new_w / w, new_h / h)
    return box_wh * scale[box_image] if len(box_wh) else box_wh.copy()


def size_summary(sizes, labels, num_classes, boundaries, strides):
    """Boxes per level and per class of boxes of ``sizes`` (float [N, 2] width, height at the
    training scale), with those smaller than the smallest stride and past the last boundary.

    Returns:
        dict with "boxes_per_level" [L], "boxes_per_level_per_class" [C + 1][L] (row 0: background,
        always 0), "below_smallest_stride", "beyond_last_boundary", "outside_fraction" and
        "half_size" (min, median, max of max(w, h) / 2, or None without boxes).
    """
    half = sizes.max(axis=1) / 2.0 if len(sizes) else np.zeros(0)
    levels = np.searchsorted(np.asarray(boundaries, np.float64), half, side="left")  # m_{l-1} < half <= m_l
    per_class = np.zeros((num_classes + 1, len(strides)), np.int64)
    np.add.at(per_class, (labels, levels), 1)
    below = int((2.0 * half < min(strides)).sum())
    beyond = int((half > float(boundaries[-1])).sum())
    return {
        "boxes_per_level": per_class.sum(axis=0).tolist(),
        "boxes_per_level_per_class": per_class.tolist(),
        "below_smallest_stride": below,
        "beyond_last_boundary": beyond,
        "outside_fraction": (below + beyond) / len(half) if len(half) else 0.0,
        "half_size": [float(half.min()), float(np.median(half)), float(half.max())] if len(half) else None,
    }


# ----------------------------------------------------------------------------- the report
def class_counts(annotations, names):
    """[{"label", "name", "images", "boxes"}] per class 1..C: images holding a box of the class, boxes."""
    labels, box_image = annotations["labels"], annotations["box_image"]
    rows = []
    for label in range(1, len(names)):
        mask = labels == label
        rows.append({"label": label, "name": names[label], "images": int(len(np.unique(box_image[mask]))),
                     "boxes": int(mask.sum())})
    return rows


def dataset_report(dataset, scales, boundaries, strides, drop_difficult=False, num_classes=None, title=""):
    """The report of ``dataset`` (read from its annotations) as a JSON-ready dict.

    Arguments:
        scales: the training scales to measure at, [{"short_side", "max_size", "crop"}] (see
            :func:`training_scales`).
        boundaries: MODEL.FCOS.SIZES_OF_INTEREST (L - 1 values); strides: MODEL.FCOS.FPN_STRIDES (L).
        drop_difficult: leave out VOC's difficult boxes (as training does).
        num_classes: MODEL.FCOS.NUM_CLASSES (with background), checked against the dataset; None: not.
    Keys: "title", "images", "images_without_boxes", "boxes", "classes" (see :func:`class_counts`),
    "skipped" {reason: count}, "levels" (names, strides, ranges, size measure), "scales" (one
    :func:`size_summary` per scale, with the scale's keys), "warnings" [str].
    """
    if len(boundaries) + 1 != len(strides):
        raise ValueError("MODEL.FCOS.SIZES_OF_INTEREST has {} boundaries, so {} levels, but MODEL.FCOS.FPN_STRIDES has "
                         "{} strides".format(len(boundaries), len(boundaries) + 1, len(strides)))
    ranges = level_ranges(boundaries)
    names = class_names_of(dataset) or ["__background"]
    annotations = collect_annotations(dataset, drop_difficult)
    if len(annotations["labels"]):
        names = names + [str(k) for k in range(len(names), int(annotations["labels"].max()) + 1)]
    with_boxes = len(np.unique(annotations["box_image"]))
    summaries, half_sizes = [], {}
    for scale in scales:
        sizes = training_scale_sizes(annotations["box_wh"], annotations["box_image"], annotations["image_wh"],
                                     scale["short_side"], scale["max_size"], scale.get("crop"))
        summary = size_summary(sizes, annotations["labels"], len(names) - 1, boundaries, strides)
        summaries.append(dict(scale, **summary))
        label = "short side {}{}".format(scale["short_side"], ", crop" if scale.get("crop") else "")
        half_sizes[label] = sizes.max(axis=1) / 2.0 if len(sizes) else np.zeros(0)
    report = {
        "title": title,
        "images": len(dataset),
        "images_without_boxes": len(dataset) - with_boxes,
        "boxes": int(len(annotations["labels"])),
        "classes": class_counts(annotations, names),
        "skipped": dict(sorted(data_skip_counts(dataset).items())),
        "levels": {"names": level_names(strides), "strides": [int(s) for s in strides],
                   "ranges": [[lo, hi if math.isfinite(hi) else None] for lo, hi in ranges],
                   "size_measure": SIZE_MEASURE},
        "scales": summaries,
        "num_classes_config": num_classes,
    }
    report["warnings"] = report_warnings(report)
    report["half_sizes"] = half_sizes  # {scale label: float [N]} for the histogram; not in report.json
    return report


def scale_text(scale):
    """"short side S (long side <= M)[, after a crop to (fh, fw)]" of a scale dict."""
    text = "short side {} (long side <= {:g})".format(scale["short_side"], scale["max_size"])
    return text + (", after a crop to {:g} x {:g} of the image".format(*scale["crop"]) if scale.get("crop") else "")


def report_warnings(report):
    """The warnings of a report dict (see :func:`dataset_report`), as sentences naming the numbers
    and the config keys to change."""
    warnings = []
    if report["boxes"] == 0:
        return ["the dataset has no usable box: nothing to train on"]
    for row in report["classes"]:
        if row["boxes"] == 0:
            warnings.append("class {!r} (label {}) has no box".format(row["name"], row["label"]))
    num_classes = report.get("num_classes_config")
    if num_classes is not None and num_classes > 0 and num_classes != len(report["classes"]) + 1:
        warnings.append("MODEL.FCOS.NUM_CLASSES is {} but the dataset has {} classes (+ background = {})".format(
            num_classes, len(report["classes"]), len(report["classes"]) + 1))
    levels = report["levels"]
    for scale in report["scales"]:
        at = "at " + scale_text(scale)
        n = report["boxes"]
        if scale["outside_fraction"] > OUTSIDE_WARN_FRACTION:
            warnings.append(
                "{:.0%} of the boxes are outside the levels' useful range {}: {} smaller than the smallest stride "
                "({} px), {} with a half size past the last boundary ({} px). Change INPUT.MIN_SIZE_TRAIN / "
                "MAX_SIZE_TRAIN or MODEL.FCOS.SIZES_OF_INTEREST".format(
                    scale["outside_fraction"], at, scale["below_smallest_stride"], min(levels["strides"]),
                    scale["beyond_last_boundary"], levels["ranges"][-1][0]))
        top = int(np.argmax(scale["boxes_per_level"]))
        if scale["boxes_per_level"][top] > ONE_LEVEL_WARN_FRACTION * n:
            warnings.append(
                "{:.0%} of the boxes fall in level {} {}: the other levels learn almost only background. "
                "MODEL.FCOS.SIZES_OF_INTEREST ({}) may not suit these objects".format(
                    scale["boxes_per_level"][top] / n, levels["names"][top], at,
                    ", ".join("{:g}".format(r[1]) for r in levels["ranges"][:-1])))
    return warnings


def _range_text(low, high):
    return "({:g}, {}]".format(low, "inf" if high is None else "{:g}".format(high))


def format_report(report):
    """The report dict as readable text (report.txt): counts, classes, sizes per level, warnings."""
    lines = ["Dataset report: {}".format(report["title"]) if report["title"] else "Dataset report",
             "images: {} ({} without boxes)".format(report["images"], report["images_without_boxes"]),
             "boxes: {}".format(report["boxes"]),
             "skipped: {}".format(", ".join("{} {}".format(k, v) for k, v in report["skipped"].items()) or "nothing"),
             "", "{:<24} {:>8} {:>8}".format("class", "images", "boxes")]
    lines += ["{:<24} {:>8} {:>8}".format(r["name"], r["images"], r["boxes"]) for r in report["classes"]]
    levels, names = report["levels"], [r["name"] for r in report["classes"]]
    lines += ["", "Object size = {}.".format(levels["size_measure"])]
    for scale in report["scales"]:
        lines += ["", "Object sizes at {}:".format(scale_text(scale))]
        if scale["half_size"]:
            lines.append("size min / median / max: {:.1f} / {:.1f} / {:.1f} px".format(*scale["half_size"]))
        lines.append("{:<6} {:>6} {:>16} {:>8} {:>6}  {}".format("level", "stride", "size range (px)", "boxes", "%",
                                                                "per class"))
        for k, name in enumerate(levels["names"]):
            count = scale["boxes_per_level"][k]
            per_class = ", ".join("{} {}".format(n, scale["boxes_per_level_per_class"][c + 1][k])
                                  for c, n in enumerate(names) if scale["boxes_per_level_per_class"][c + 1][k])
            lines.append("{:<6} {:>6} {:>16} {:>8} {:>5.1f}%  {}".format(
                name, levels["strides"][k], _range_text(*levels["ranges"][k]), count,
                100.0 * count / max(report["boxes"], 1), per_class))
        lines.append("smaller than the smallest stride ({} px): {}; half size past the last boundary: {}".format(
            min(levels["strides"]), scale["below_smallest_stride"], scale["beyond_last_boundary"]))
    lines += [""] + ["WARNING: " + w for w in report["warnings"]] if report["warnings"] else ["", "No warnings."]
    return "\n".join(lines) + "\n"


def write_report(report, out_dir):
    """Write report.txt, report.json (the dict without the raw sizes) and report.png into ``out_dir``.
    Returns {"txt", "json", "png"}: the paths."""
    from .report_plot import plot_report

    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, "report." + ext) for ext in ("txt", "json", "png")}
    with open(paths["txt"], "w") as f:
        f.write(format_report(report))
    with open(paths["json"], "w") as f:
        json.dump({k: v for k, v in report.items() if k != "half_sizes"}, f, indent=1)
    plot_report(report, paths["png"])
    return paths


def make_report(cfg, split="train", check_images=False):
    """The report of DATASETS.TRAIN ("train") or DATASETS.TEST ("test") against
    MODEL.FCOS.SIZES_OF_INTEREST and FPN_STRIDES, with ``check_images`` counting unreadable images.

    Training scales (:func:`training_scales`): the smallest and largest short side of
    INPUT.MIN_SIZE_TRAIN (or MIN_SIZE_RANGE_TRAIN), MAX_SIZE_TRAIN, times the ends of
    SCALE_JITTER_TRAIN, the largest after the smallest crop of CROP_SIZE_TRAIN when CROP_PROB_TRAIN
    > 0. Test: MIN_SIZE_TEST, MAX_SIZE_TEST.
    """
    is_train = check_split(split) == "train"
    dataset = datasets_of_split(cfg, split, None, keep_all_images=True)
    if check_images:
        count_unreadable_images(dataset)
    inp = cfg.INPUT
    if not is_train:
        scales = training_scales([inp.MIN_SIZE_TEST], inp.MAX_SIZE_TEST)
    else:
        min_sizes = list(train_min_sizes(inp.MIN_SIZE_TRAIN, inp.MIN_SIZE_RANGE_TRAIN))
        crop = inp.CROP_SIZE_TRAIN if inp.CROP_PROB_TRAIN > 0 else None
        scales = training_scales(min_sizes, inp.MAX_SIZE_TRAIN, inp.SCALE_JITTER_TRAIN, crop)
    title = "{} ({} split)".format(", ".join(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST), split)
    return dataset_report(dataset, scales, cfg.MODEL.FCOS.SIZES_OF_INTEREST, cfg.MODEL.FCOS.FPN_STRIDES,
                          drop_difficult=is_train, num_classes=cfg.MODEL.FCOS.NUM_CLASSES, title=title)
