"""The training loop: iteration-based, with periodic atomic checkpoints, smoothed logging, JSON-lines
metrics, a progress bar on terminals, and a stop (after saving the last good state) when a loss
stops being finite."""
import datetime
import json
import logging
import os
import random
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

from fcos_core.utils.comm import get_rank, get_world_size, is_main_process
from fcos_core.utils.metric_logger import MetricLogger


def reduce_loss_dict(loss_dict):
    """Losses averaged over processes, for logging only (rank 0 receives the average)."""
    world_size = get_world_size()
    if world_size < 2:
        return {k: v.detach() for k, v in loss_dict.items()}
    with torch.no_grad():
        names = sorted(loss_dict.keys())
        stacked = torch.stack([loss_dict[k].detach().float() for k in names])
        torch.distributed.all_reduce(stacked)
        stacked /= world_size
    return dict(zip(names, stacked))


def rng_state():
    """Python, numpy and torch random states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what :func:`rng_state` saved."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def autocast_context(device, dtype):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _memory_mb(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 1024.0 / 1024.0
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    except ImportError:  # pragma: no cover - not on Linux
        return 0.0


class _Progress:
    """A tqdm bar on an interactive terminal (rank 0), nothing elsewhere."""

    def __init__(self, start, total):
        self.bar = None
        if is_main_process() and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, leave=True)

    def update(self, text):
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def do_train(
    model,
    data_loader,
    optimizer,
    scheduler,
    checkpointer,
    device,
    checkpoint_period,
    arguments,
    max_iter,
    amp_dtype=None,
    grad_scaler=None,
    clip_grad_norm=0.0,
    channels_last=False,
    log_period=20,
    metrics_path=None,
    logger=None,
):
    """Train until ``max_iter``, starting from ``arguments["iteration"]``.

    Args:
        data_loader: yields (ImageList, targets, image ids) for iterations
            ``start_iter + 1 .. max_iter`` (an iteration-based batch sampler).
        checkpointer: saves ``model_XXXXXXX.pth`` every ``checkpoint_period`` iterations and
            ``model_final.pth`` at the end, with ``arguments``, the random state and the
            ``grad_scaler``'s state ("scaler"), so that running the same command again resumes.
        amp_dtype: torch.float16 / torch.bfloat16 for autocast, or None for float32.
        grad_scaler: a ``torch.amp.GradScaler`` when training in float16.
        log_period: log every this many iterations (and at the last).
        metrics_path: JSON-lines file that receives one record per logged iteration (rank 0):
            "iteration", "lr", the median of each meter over its window (e.g. "loss") and under
            "latest" the meters' values of the logged iteration itself (losses averaged over
            the processes).

    Raises:
        FloatingPointError: a loss became NaN or infinite, or (float32 / bfloat16) the gradients
            did with finite losses; the weights before that iteration were saved as
            ``model_last_good.pth`` first and no step was taken with them.
    """
    logger = logger or logging.getLogger("fcos_core.trainer")
    meters = MetricLogger(delimiter="  ")
    start_iter = arguments["iteration"]
    model.train()
    progress = _Progress(start_iter, max_iter)
    start_time = end = time.time()
    iteration = start_iter
    try:
        for iteration, (images, targets, _) in enumerate(data_loader, start_iter + 1):
            data_time = time.time() - end
            arguments["iteration"] = iteration
            images = images.to(device)
            if channels_last:
                images.tensors = images.tensors.contiguous(memory_format=torch.channels_last)
            targets = [t.to(device) for t in targets]
            with autocast_context(device, amp_dtype):
                loss_dict = model(images, targets)
            losses = sum(loss.float() for loss in loss_dict.values())
            reduced = reduce_loss_dict(loss_dict)
            optimizer.zero_grad(set_to_none=True)
            grad_norm = _backward(losses, optimizer, grad_scaler, model, clip_grad_norm)
            # The one host synchronisation of a step: the logged loss and the gradient norm together.
            total, norm = _host_floats(sum(reduced.values()), grad_norm)
            if not np.isfinite(total):
                _stop_on_bad_loss(checkpointer, arguments, iteration, reduced, logger)
            if grad_scaler is None and not np.isfinite(norm):
                # float32 / bfloat16: a step would write NaN into every weight (float16's scaler
                # skips such steps by itself)
                _stop_on_bad_loss(checkpointer, arguments, iteration, reduced, logger, grad_norm=norm)
            _step(optimizer, grad_scaler)
            scheduler.step()

            batch_time = time.time() - end
            end = time.time()
            meters.update(loss=total, time=batch_time, data=data_time, **{k: float(v) for k, v in reduced.items()})
            lr = optimizer.param_groups[0]["lr"]
            progress.update(f"loss {meters.loss.median:.3f} lr {lr:.2e}")
            if iteration % log_period == 0 or iteration == max_iter:
                _log(logger, meters, iteration, max_iter, lr, device, metrics_path)
            if checkpoint_period > 0 and iteration % checkpoint_period == 0 and iteration != max_iter:
                checkpointer.save(f"model_{iteration:07d}", **_resume_state(arguments, grad_scaler))
    finally:
        progress.close()
    if iteration >= max_iter:
        checkpointer.save("model_final", **_resume_state(arguments, grad_scaler))
    total_time = time.time() - start_time
    done = max(iteration - start_iter, 1)
    logger.info(
        "Total training time: %s (%.4f s / it)", datetime.timedelta(seconds=int(total_time)), total_time / done
    )
    return meters


def _resume_state(arguments, grad_scaler):
    """What a checkpoint holds besides model, optimizer and scheduler: ``arguments`` (the
    iteration), the random state and the gradient scaler's state when there is one."""
    state = dict(arguments, rng_state=rng_state())
    if grad_scaler is not None:
        state["scaler"] = grad_scaler.state_dict()
    return state


def _backward(losses, optimizer, grad_scaler, model, clip_grad_norm):
    """Backward pass (scaled in float16), then clipping to ``clip_grad_norm`` when > 0.

    Returns the global L2 norm of the gradients before clipping (a 0-dim tensor, not synchronised),
    or None in float16 without clipping (the scaler checks for inf/NaN itself then).
    """
    if grad_scaler is not None:
        grad_scaler.scale(losses).backward()
        if clip_grad_norm <= 0:
            return None
        grad_scaler.unscale_(optimizer)
        return torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    losses.backward()
    if clip_grad_norm > 0:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def _step(optimizer, grad_scaler):
    if grad_scaler is not None:
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        optimizer.step()


def _host_floats(total, grad_norm):
    """(total, grad_norm) as Python floats with one device-to-host copy; grad_norm may be None (nan)."""
    if grad_norm is None:
        return float(total), float("nan")
    values = torch.stack([total.detach().float(), grad_norm.detach().float().to(total.device)]).tolist()
    return values[0], values[1]


def _stop_on_bad_loss(checkpointer, arguments, iteration, reduced, logger, grad_norm=None):
    """Save the weights from before this iteration and stop with a message naming the loss (or,
    with ``grad_norm``, saying that the losses were finite but the gradients were not)."""
    last_good = dict(arguments, iteration=iteration - 1)
    path = checkpointer.save("model_last_good", rng_state=rng_state(), **last_good)
    if grad_norm is None:
        bad = {k: float(v) for k, v in reduced.items() if not np.isfinite(float(v))}
        what = "loss became non-finite at iteration {}: {}".format(
            iteration, ", ".join(f"{k} = {v}" for k, v in bad.items()))
    else:
        what = "gradients became non-finite at iteration {} (global norm {}) with finite losses ({})".format(
            iteration, grad_norm, ", ".join(f"{k} = {float(v):.4f}" for k, v in reduced.items()))
    msg = (
        what
        + (f"; the weights from before it were saved to {path}" if path else "")
        + ". Lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or set SOLVER.CLIP_GRAD_NORM"
        + ("; with SOLVER.AMP, try without it." if grad_norm is not None else ".")
    )
    logger.error(msg)
    raise FloatingPointError(msg)


def _log(logger, meters, iteration, max_iter, lr, device, metrics_path):
    eta_seconds = meters.time.global_avg * (max_iter - iteration)
    eta = str(datetime.timedelta(seconds=int(eta_seconds)))
    mem = _memory_mb(device)
    logger.info(
        "eta: %s  iter: %d  %s  lr: %.6f  max mem: %.0f MB", eta, iteration, str(meters), lr, mem
    )
    if metrics_path and get_rank() == 0:
        record = {"iteration": iteration, "lr": lr, "eta_seconds": eta_seconds, "max_mem_mb": mem}
        record.update({name: meter.median for name, meter in meters.meters.items()})
        record["latest"] = {name: meter.latest for name, meter in meters.meters.items()}
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")


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
