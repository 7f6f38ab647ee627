"""The picture of a training run: losses and learning rate from its ``metrics.json``, and the AP of
the evaluations during training (SOLVER.TEST_PERIOD) in a third panel when there are any."""
import json
import os

LOSS_KEYS = ("loss", "loss_cls", "loss_reg", "loss_centerness")


def read_metrics(metrics_path):
    """The records of a ``metrics.json`` (JSON lines) split by kind: (training records with
    "iteration", "lr", losses..., evaluation records {"iteration": i, "eval": {dataset: {metric: value}}})."""
    train, evals = [], []
    with open(metrics_path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if "eval" in record:
                evals.append(record)
            elif "lr" in record:
                train.append(record)
    return train, evals


def ap_series(eval_records):
    """{dataset: {metric: ([iterations], [values])}} for AP and AP50 of the evaluation records,
    leaving out values that are None (no ground truth)."""
    series = {}
    for record in eval_records:
        for dataset, metrics in record["eval"].items():
            for metric in ("AP", "AP50"):
                if metrics.get(metric) is not None:
                    its, values = series.setdefault(dataset, {}).setdefault(metric, ([], []))
                    its.append(record["iteration"])
                    values.append(metrics[metric])
    return series


def plot_loss_curves(metrics_path, out_png):
    """Draw the losses and learning rate of a ``metrics.json`` file into ``out_png`` (and, when it
    holds evaluation records, bbox AP and AP50 per test dataset against the iteration in a third
    panel); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records, evals = read_metrics(metrics_path)
    if not records:
        raise ValueError(f"{metrics_path} holds no records to plot")
    series = ap_series(evals)
    its = [r["iteration"] for r in records]
    fig, axes = plt.subplots(1, 3 if series else 2, figsize=(16 if series else 11, 4))
    ax_loss, ax_lr = axes[0], axes[1]
    for key in LOSS_KEYS:
        if key in records[0]:
            ax_loss.plot(its, [r.get(key) for r in records], label=key)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss (median of last 20)")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(its, [r["lr"] for r in records], color="tab:purple")
    ax_lr.set_xlabel("iteration")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    if series:
        _plot_ap(axes[2], series)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def _plot_ap(ax, series):
    """AP (solid, with markers) and AP50 (dashed) per dataset; a star on the best AP of the first."""
    for i, (dataset, metrics) in enumerate(series.items()):
        color = "C{}".format(i)
        for metric, style in (("AP", "-o"), ("AP50", "--")):
            if metric in metrics:
                ax.plot(*metrics[metric], style, color=color, markersize=3, label="{} {}".format(dataset, metric))
        if i == 0 and "AP" in metrics:
            its, values = metrics["AP"]
            best = max(range(len(values)), key=lambda k: (values[k], -k))
            ax.plot([its[best]], [values[best]], "*", color="black", markersize=12, label="best AP")
    ax.set_xlabel("iteration")
    ax.set_ylabel("bbox AP (evaluation during training)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
