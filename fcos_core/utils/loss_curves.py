"""The picture of a training run: losses and learning rate from its ``metrics.json``."""
import json
import os


def plot_loss_curves(metrics_path, out_png):
    """Draw the losses and learning rate of a ``metrics.json`` file into ``out_png``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = []
    with open(metrics_path) as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    if not records:
        raise ValueError(f"{metrics_path} holds no records to plot")
    its = [r["iteration"] for r in records]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "loss_cls", "loss_reg", "loss_centerness"):
        if key in records[0]:
            ax_loss.plot(its, [r[key] for r in records], label=key)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss (median of last 20)")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(its, [r["lr"] for r in records], color="tab:purple")
    ax_lr.set_xlabel("iteration")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
