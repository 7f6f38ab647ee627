"""The training loop: iteration-based, with periodic atomic checkpoints, smoothed logging, JSON-lines
metrics (and TensorBoard scalars through an event writer), periodic evaluation through a callable, a
progress bar on terminals, and a stop (after saving the last good state) when a loss stops being
finite.

:func:`do_train` takes its settings as one :class:`TrainOptions` (built from the config by
:func:`make_train_options`); what a checkpoint holds for resuming is :mod:`fcos_core.engine.resume`'s.
"""
import datetime
import json
import logging
import os
import time
from typing import NamedTuple, Optional

import numpy as np
import torch

from fcos_core.engine.resume import resume_state
from fcos_core.utils.amp import autocast_context
from fcos_core.utils.checkpoint_keep import prune_checkpoints
from fcos_core.utils.comm import get_rank, get_world_size
from fcos_core.utils.env import amp_dtype_for
from fcos_core.utils.metric_logger import MetricLogger
from fcos_core.utils.progress import Progress, peak_memory_mb


class TrainOptions(NamedTuple):
    """How :func:`do_train` runs (SOLVER.* keys; see :func:`make_train_options`).

    device: where the model and batches live ("cpu", "cuda", ...). max_iter: the last iteration.
    checkpoint_period: save ``model_XXXXXXX.pth`` every this many iterations (0: only the final one).
    checkpoint_keep: keep only the last this many of those (0: all; see
    :func:`fcos_core.utils.checkpoint_keep.prune_checkpoints`).
    amp_dtype: torch.float16 / torch.bfloat16 for autocast, or None for float32.
    clip_grad_norm: clip the global gradient norm to this when > 0. channels_last: batches in NHWC.
    log_period: log every this many iterations (and at the last). metrics_path: JSON-lines file of
    the logged iterations (rank 0), or None. test_period: call do_train's ``eval_fn`` every this
    many iterations and at the last (0: never).
    """

    device: str = "cpu"
    max_iter: int = 1
    checkpoint_period: int = 0
    checkpoint_keep: int = 0
    amp_dtype: Optional[torch.dtype] = None
    clip_grad_norm: float = 0.0
    channels_last: bool = False
    log_period: int = 20
    metrics_path: Optional[str] = None
    test_period: int = 0


def make_train_options(cfg, metrics_path=None):
    """:class:`TrainOptions` from SOLVER.* and MODEL.DEVICE (the one place that reads them)."""
    if cfg.SOLVER.CHECKPOINT_KEEP < 0:
        raise ValueError(f"SOLVER.CHECKPOINT_KEEP must be 0 (keep all) or a count of checkpoints to keep, "
                         f"not {cfg.SOLVER.CHECKPOINT_KEEP}")
    return TrainOptions(
        device=cfg.MODEL.DEVICE,
        max_iter=cfg.SOLVER.MAX_ITER,
        checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD,
        checkpoint_keep=cfg.SOLVER.CHECKPOINT_KEEP,
        amp_dtype=amp_dtype_for(cfg.MODEL.DEVICE, cfg.SOLVER.AMP),
        clip_grad_norm=cfg.SOLVER.CLIP_GRAD_NORM,
        channels_last=cfg.SOLVER.CHANNELS_LAST,
        log_period=cfg.SOLVER.LOG_PERIOD,
        metrics_path=metrics_path,
        test_period=cfg.SOLVER.TEST_PERIOD,
    )


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


def do_train(model, data_loader, optimizer, scheduler, checkpointer, arguments, options, grad_scaler=None,
             logger=None, eval_fn=None, events=None):
    """Train until ``options.max_iter``, starting from ``arguments["iteration"]``.

    Args:
        data_loader: yields (ImageList, targets, image ids) for iterations
            ``start_iter + 1 .. max_iter`` (an iteration-based batch sampler).
        checkpointer: saves ``model_XXXXXXX.pth`` every ``options.checkpoint_period`` iterations
            (the last ``options.checkpoint_keep`` of them kept when that is > 0)
            and ``model_final.pth`` at the end, with :func:`fcos_core.engine.resume.resume_state`
            (iteration, random state, the ``grad_scaler``'s state), so that the same command resumes.
        arguments (dict): {"iteration": int}; updated in place as training goes.
        options (TrainOptions): device, max_iter, AMP, clipping, logging, metrics file.
        grad_scaler: a ``torch.amp.GradScaler`` when training in float16.
        eval_fn: ``eval_fn(iteration) -> {dataset: {metric: value}} or None``, called in every
            process at each multiple of ``options.test_period`` and at ``max_iter``, before that
            iteration's checkpoint (so the checkpoint holds what it put in ``arguments``); the
            model is put back in train mode after it.
        events: an :class:`fcos_core.utils.events.EventWriter` for the logged losses and lr.

    The metrics file receives one record per logged iteration (rank 0): "iteration", "lr", the
    median of each meter over its window (e.g. "loss") and under "latest" the meters' values of the
    logged iteration itself (losses averaged over the processes); and one record
    {"iteration": i, "eval": what eval_fn returned} per evaluation that returned something.

    Raises:
        FloatingPointError: a loss became NaN or infinite, or (float32 / bfloat16) the gradients
            did with finite losses; the weights before that iteration were saved as
            ``model_last_good.pth`` first and no step was taken with them.
    """
    device, max_iter, amp_dtype = options.device, options.max_iter, options.amp_dtype
    logger = logger or logging.getLogger("fcos_core.trainer")
    meters = MetricLogger(delimiter="  ")
    start_iter = arguments["iteration"]
    model.train()
    progress = Progress(start_iter, max_iter)
    start_time = end = time.time()
    iteration = start_iter
    try:
        for iteration, (images, targets, _) in enumerate(data_loader, start_iter + 1):
            data_time = time.time() - end
            arguments["iteration"] = iteration
            images = images.to(device)
            if options.channels_last:
                images.tensors = images.tensors.contiguous(memory_format=torch.channels_last)
            targets = [t.to(device) for t in targets]
            with autocast_context(device, amp_dtype):
                loss_dict = model(images, targets)
            losses = sum(loss.float() for loss in loss_dict.values())
            reduced = reduce_loss_dict(loss_dict)
            optimizer.zero_grad(set_to_none=True)
            grad_norm = _backward(losses, optimizer, grad_scaler, model, options.clip_grad_norm)
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
            if iteration % options.log_period == 0 or iteration == max_iter:
                _log(logger, meters, iteration, max_iter, lr, device, options.metrics_path, events)
            if eval_fn is not None and _eval_due(iteration, options.test_period, max_iter):
                record = eval_fn(iteration)
                model.train()
                if record:
                    _append_record(options.metrics_path, {"iteration": iteration, "eval": record})
                end = time.time()  # the evaluation is not an iteration's time
            period = options.checkpoint_period
            if period > 0 and iteration % period == 0 and iteration != max_iter:
                saved = checkpointer.save(f"model_{iteration:07d}", **resume_state(arguments, grad_scaler))
                if saved and options.checkpoint_keep > 0:  # written and named by last_checkpoint: older ones may go
                    prune_checkpoints(os.path.dirname(saved), options.checkpoint_keep, logger)
    finally:
        progress.close()
        if events is not None:
            events.flush()
    if iteration >= max_iter:
        checkpointer.save("model_final", **resume_state(arguments, grad_scaler))
    total_time = time.time() - start_time
    done = max(iteration - start_iter, 1)
    logger.info(
        "Total training time: %s (%.4f s / it)", datetime.timedelta(seconds=int(total_time)), total_time / done
    )
    return meters


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
    path = checkpointer.save("model_last_good", **resume_state(arguments, iteration=iteration - 1))
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


def _eval_due(iteration, period, max_iter):
    return period > 0 and (iteration % period == 0 or iteration == max_iter)


def _append_record(metrics_path, record):
    """Append ``record`` as one JSON line to ``metrics_path`` (rank 0; nothing when it is None)."""
    if metrics_path and get_rank() == 0:
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _log(logger, meters, iteration, max_iter, lr, device, metrics_path, events=None):
    eta_seconds = meters.time.global_avg * (max_iter - iteration)
    eta = str(datetime.timedelta(seconds=int(eta_seconds)))
    mem = peak_memory_mb(device)
    logger.info(
        "eta: %s  iter: %d  %s  lr: %.6f  max mem: %.0f MB", eta, iteration, str(meters), lr, mem
    )
    losses = {name: meter.median for name, meter in meters.meters.items()}
    record = {"iteration": iteration, "lr": lr, "eta_seconds": eta_seconds, "max_mem_mb": mem, **losses}
    record["latest"] = {name: meter.latest for name, meter in meters.meters.items()}
    _append_record(metrics_path, record)
    if events is not None:
        events.add_scalars({"train/" + name: value for name, value in losses.items() if name.startswith("loss")},
                           iteration)
        events.add_scalars({"train/lr": lr, "train/time": losses["time"]}, iteration)
