"""The picture of a dataset report (report.png): boxes and images per class, the object sizes at
the training scale with the FPN level boundaries drawn, and the boxes of each level by class."""
import math
import os

import numpy as np


def _plot_classes(ax, report):
    """Bars of boxes and images per class."""
    names = [r["name"] for r in report["classes"]]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [r["boxes"] for r in report["classes"]], 0.4, label="boxes")
    ax.bar(x + 0.2, [r["images"] for r in report["classes"]], 0.4, label="images")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_title("{} images ({} without boxes), {} boxes".format(
        report["images"], report["images_without_boxes"], report["boxes"]), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _integer_counts(ax)


def _integer_counts(ax):
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_sizes(ax, report):
    """Histogram of max(w, h) / 2 per training scale on a log axis, with the level boundaries and
    half the smallest stride (a box smaller than one stride) as vertical lines."""
    levels = report["levels"]
    halves = [h for h in report["half_sizes"].values() if len(h)]
    low = min([min(levels["strides"]) / 4.0] + [float(h.min()) for h in halves])
    high = max([2.0 * levels["ranges"][-1][0]] + [float(h.max()) for h in halves])
    bins = np.geomspace(max(low, 0.5), high * 1.05, 40)
    for text, half in report["half_sizes"].items():
        ax.hist(np.clip(half, bins[0], bins[-1]), bins=bins, histtype="step", linewidth=1.5, label=text)
    ax.set_xscale("log")
    for k, (lo, hi) in enumerate(levels["ranges"]):
        if k > 0:
            ax.axvline(lo, color="black", linestyle="--", linewidth=1)
        top = hi if hi is not None else bins[-1]
        centre = math.sqrt(max(lo, bins[0]) * top)
        ax.text(centre, 1.0, levels["names"][k], transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=8)
    ax.axvline(min(levels["strides"]) / 2.0, color="red", linestyle=":", linewidth=1,
               label="smallest stride / 2")
    ax.set_xlabel("max(w, h) / 2 at the training scale (px)")
    ax.set_ylabel("boxes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _integer_counts(ax)


def _plot_levels(ax, report):
    """Boxes per level, stacked by class; one group of bars per training scale."""
    levels, scales = report["levels"], report["scales"]
    x = np.arange(len(levels["names"]))
    width = 0.8 / max(len(scales), 1)
    names = [r["name"] for r in report["classes"]]
    for j, scale in enumerate(scales):
        counts = np.asarray(scale["boxes_per_level_per_class"])[1:]  # [C, L]
        bottom = np.zeros(len(x))
        for c, name in enumerate(names):
            ax.bar(x + (j - (len(scales) - 1) / 2.0) * width, counts[c], width, bottom=bottom,
                   color="C{}".format(c % 10), hatch="//" if j else None, label=name if j == 0 else None)
            bottom += counts[c]
    ax.set_xticks(x)
    ax.set_xticklabels(levels["names"])
    ax.set_title("boxes per level" + (" (hatched: short side {}, the largest zoom)".format(scales[-1]["short_side"])
                                      if len(scales) > 1 else ""), fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    _integer_counts(ax)


def plot_report(report, out_png):
    """Draw the three panels of a report dict (:func:`fcos_core.data.report.dataset_report`, with its
    "half_sizes") into ``out_png``, warnings in the figure's title. Returns ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    _plot_classes(axes[0], report)
    _plot_sizes(axes[1], report)
    _plot_levels(axes[2], report)
    title = report["title"] or "dataset report"
    if report["warnings"]:
        title += "  -  {} warning(s): see report.txt".format(len(report["warnings"]))
    fig.suptitle(title, fontsize=10, color="darkred" if report["warnings"] else "black")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png
