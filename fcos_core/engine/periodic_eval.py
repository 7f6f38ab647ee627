"""Evaluation during training (SOLVER.TEST_PERIOD) and the best checkpoint, ``model_best.pth``.

:class:`PeriodicEvaluator` is the ``eval_fn`` that :func:`fcos_core.engine.trainer.do_train` calls
at every multiple of SOLVER.TEST_PERIOD and at SOLVER.MAX_ITER: it evaluates DATASETS.TEST in all
processes (results under OUTPUT_DIR/inference/<name>/, overwritten by each evaluation, so they end
as the final model's), returns the AP numbers that the trainer writes into metrics.json, and on
rank 0 saves ``model_best.pth`` when the bbox AP of the first test dataset beats the best so far.
The best (value, dataset, metric, iteration) is part of the resume state, so a resumed run never
replaces a better ``model_best.pth``; ``last_checkpoint`` never points at it.

With SOLVER.TEST_PERIOD > 0 the evaluation at MAX_ITER is the test after training
(:func:`tested_during_training`): tools/train_net.py does not evaluate again.

An evaluation that fails (a broken test json, a missing image folder, ...) never loses training:
during training the error is logged with its traceback and training goes on; at MAX_ITER, or in
the test after training (:func:`evaluate_after_training`), the run ends with :class:`EvaluationError`
naming the saved weights, once they are saved.
"""
import logging
import math
import os
from collections import OrderedDict

import numpy as np

from fcos_core.config.paths_catalog import results_folder_name
from fcos_core.data.build import build_dataset, load_dataset_catalog
from fcos_core.data.datasets.evaluation import load_predictions
from fcos_core.engine.resume import BEST, resume_state
from fcos_core.utils.checkpoint import Checkpointer, safe_torch_load
from fcos_core.utils.events import EventWriter
from fcos_core.utils.visualizer import draw_detections

BEST_NAME = "model_best"
BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class EvaluationError(RuntimeError):
    """An evaluation could not run; the message says where the trained weights are."""


def eval_metrics(result):
    """The bbox AP numbers of one evaluation result of :func:`fcos_core.engine.defaults.run_test`.

    COCO (COCOResults, detections): OrderedDict of AP, AP50, AP75, APs, APm, APl (fractions in
    [0, 1]; None where pycocotools gives -1, i.e. no ground truth of that size). VOC
    ({"map": float, ...}): {"AP50": map}. None for a process without results (rank > 0).
    """
    if result is None:
        return None
    if isinstance(result, dict) and "map" in result:
        return OrderedDict(AP50=_finite_or_none(result["map"]))
    coco = result[0] if isinstance(result, tuple) else result
    bbox = coco.results["bbox"]
    return OrderedDict((k, _finite_or_none(bbox[k]) if bbox[k] != -1 else None) for k in BBOX_METRICS)


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def best_metric(metrics):
    """(name, value) that ``model_best`` is chosen by: bbox "AP" (COCO), else "AP50" (VOC)."""
    name = "AP" if "AP" in metrics else "AP50"
    return name, metrics.get(name)


def tested_during_training(cfg):
    """True when SOLVER.TEST_PERIOD evaluates DATASETS.TEST at MAX_ITER inside training, so that
    the test after training would only repeat it."""
    return cfg.SOLVER.TEST_PERIOD > 0 and len(cfg.DATASETS.TEST) > 0


def failure_message(what, exc, weights):
    """'<what> failed (<ExcType>: <message>); <where the weights are>.' for an evaluation error."""
    where = ("the trained weights are saved at {}".format(weights) if weights
             else "no checkpoint has been written yet")
    return "{} failed ({}: {}); {}.".format(what, type(exc).__name__, exc, where)


def saved_weights(checkpointer):
    """The path ``last_checkpoint`` names (the latest periodic or final checkpoint), or None."""
    if checkpointer is None or not checkpointer.has_checkpoint():
        return None
    return checkpointer.get_checkpoint_file() or None


def evaluate_after_training(run_eval, output_dir, logger=None):
    """``run_eval()`` (the test of tools/train_net.py) and its result; an exception becomes
    :class:`EvaluationError` saying that training finished and where its model is (the checkpoint
    that ``<output_dir>/last_checkpoint`` names)."""
    logger = logger or logging.getLogger("fcos_core.trainer")
    try:
        return run_eval()
    except Exception as exc:
        weights = saved_weights(Checkpointer(None, save_dir=output_dir)) if output_dir else None
        msg = failure_message("The test after training", exc, weights)
        msg += " Fix DATASETS.TEST and evaluate those weights with tools/test_net.py (MODEL.WEIGHT <path>)."
        logger.error(msg)
        raise EvaluationError(msg) from exc


def _recorded_best(path):
    """The "best" dict that ``model_best.pth`` at ``path`` records, or None (unreadable, or none)."""
    try:
        best = safe_torch_load(path).get(BEST)
    except Exception:  # a damaged model_best must not stop a resume: it is replaced by the next best
        return None
    return dict(best) if isinstance(best, dict) and "value" in best else None


class PeriodicEvaluator:
    """The ``eval_fn(iteration) -> {dataset name: {metric: value}} or None`` of do_train.

    Args:
        run_eval: () -> list of evaluation results, one per name of ``dataset_names``, run in every
            process (rank > 0 gets None entries).
        dataset_names: DATASETS.TEST; model_best follows the first.
        checkpointer: saves ``model_best`` (``tag_last=False``) and names the saved weights.
        arguments: do_train's dict ({"iteration": i, "best": ...}); the best is kept in it so that
            every checkpoint carries it.
        max_iter: the last iteration (its evaluation failing ends the run after model_final).
        grad_scaler: saved with model_best's resume state. events: an EventWriter (AP, pictures).
        load_picture_dataset: () -> the first test dataset without transforms (for TensorBoard
            pictures), or None.
        output_dir: where run_eval writes inference/<name>/predictions.pth.
    """

    def __init__(self, run_eval, dataset_names, checkpointer, arguments, max_iter, grad_scaler=None,
                 events=None, load_picture_dataset=None, output_dir=None, num_pictures=3, logger=None):
        self.run_eval, self.dataset_names = run_eval, list(dataset_names)
        self.checkpointer, self.arguments, self.max_iter = checkpointer, arguments, max_iter
        self.grad_scaler, self.events = grad_scaler, events if events is not None else EventWriter()
        self.load_picture_dataset, self.output_dir, self.num_pictures = load_picture_dataset, output_dir, num_pictures
        self.logger = logger or logging.getLogger("fcos_core.trainer")
        self.final_error = None
        self._logged_error = None  # the last error logged with its traceback (repeats are not)
        self._picture_dataset = None
        self._check_restored_best()

    @property
    def best(self):
        """{"value", "dataset", "metric", "iteration"} of model_best.pth, or None."""
        return self.arguments.get(BEST)

    def _check_restored_best(self):
        """The best so far is the one ``model_best.pth`` in this run's folder records: a best restored
        from a checkpoint without that file is another run's (weights given as MODEL.WEIGHT), and a
        model_best saved after the checkpoint that was resumed (a crash in between) records a better
        one than that checkpoint knows."""
        best = self.best
        folder = getattr(self.checkpointer, "save_dir", "")
        path = os.path.join(folder, BEST_NAME + ".pth") if folder else ""
        if not (path and os.path.exists(path)):
            if best:
                self.logger.info("The loaded checkpoint names a best %s %.4f (iteration %d) but %s has no %s.pth; "
                                 "starting the best anew", best["metric"], best["value"], best["iteration"],
                                 folder or "OUTPUT_DIR", BEST_NAME)
                self.arguments.pop(BEST)
            return
        on_disk = _recorded_best(path)
        if on_disk and (not best or on_disk["value"] > best["value"]):
            self.arguments[BEST] = best = on_disk
        if best:
            self.logger.info("Best so far: %s %.4f on %s at iteration %d (%s.pth)", best["metric"], best["value"],
                             best["dataset"], best["iteration"], BEST_NAME)

    def __call__(self, iteration):
        try:
            results = self.run_eval()
        except Exception as exc:
            self._on_failure(iteration, exc)
            return None
        record = OrderedDict()
        for name, result in zip(self.dataset_names, results):
            metrics = eval_metrics(result)
            if metrics is not None:
                record[name] = metrics
        if not record:
            return None  # a process other than rank 0
        self._log_and_keep_best(iteration, record)
        self.events.add_scalars({"eval/{}/{}".format(name, k): v for name, metrics in record.items()
                                 for k, v in metrics.items()}, iteration)
        self._write_pictures(iteration)
        self.events.flush()
        return record

    def _on_failure(self, iteration, exc):
        final = iteration >= self.max_iter
        what = "The evaluation of DATASETS.TEST at iteration {}".format(iteration)
        msg = failure_message(what, exc, saved_weights(self.checkpointer))
        if final:
            self.final_error = exc
            msg += " model_final.pth is saved next, then the run stops with this error."
        else:
            msg += " Training goes on; checkpoints are written as usual."
        again = self._logged_error == (type(exc), str(exc))
        self._logged_error = (type(exc), str(exc))
        self.logger.error(msg + (" (The same error as before: its traceback is above.)" if again else ""),
                          exc_info=None if again else exc)

    def _log_and_keep_best(self, iteration, record):
        name = self.dataset_names[0]
        metric, value = best_metric(record.get(name, {}))
        self.logger.info("Evaluation at iteration %d: %s", iteration, "; ".join(
            "{}: {}".format(n, ", ".join("{} {}".format(k, "n/a" if v is None else "{:.4f}".format(v))
                                         for k, v in m.items())) for n, m in record.items()))
        best = self.best
        if value is None or (best is not None and value <= best["value"]):
            if best is not None:
                self.logger.info("Best %s so far: %.4f at iteration %d (%s.pth)", best["metric"], best["value"],
                                 best["iteration"], BEST_NAME)
            return
        self.arguments[BEST] = {"value": float(value), "dataset": name, "metric": metric, "iteration": int(iteration)}
        path = self.checkpointer.save(BEST_NAME, tag_last=False, **resume_state(self.arguments, self.grad_scaler))
        self.logger.info("New best %s %.4f on %s at iteration %d%s%s", metric, value, name, iteration,
                         " (was {:.4f} at iteration {})".format(best["value"], best["iteration"]) if best else "",
                         "; saved {}".format(path) if path else "")

    def _write_pictures(self, iteration):
        """A few validation images with this evaluation's detections, to TensorBoard (rank 0). A
        failure here only costs the pictures."""
        if not (self.events.enabled and self.load_picture_dataset and self.output_dir and self.num_pictures):
            return
        name = self.dataset_names[0]
        try:
            if self._picture_dataset is None:
                self._picture_dataset = self.load_picture_dataset()
            folder = os.path.join(self.output_dir, "inference", results_folder_name(name))
            predictions = load_predictions(os.path.join(folder, "predictions.pth"))
            names = getattr(self._picture_dataset, "class_names", None)
            for i, picture in enumerate(validation_pictures(self._picture_dataset, predictions, self.num_pictures,
                                                            names=names)):
                self.events.add_image("eval/{}/image_{}".format(name, i), picture, iteration)
        except Exception as exc:  # pictures are a convenience: never stop training for them
            self.logger.warning("No validation pictures for TensorBoard at iteration %d: %s: %s", iteration,
                                type(exc).__name__, exc)

    def finish(self):
        """Log the best evaluation; raise :class:`EvaluationError` when the one at MAX_ITER failed
        (call after model_final is saved)."""
        best = self.best
        if best is not None:
            self.logger.info("Best %s %.4f on %s at iteration %d: %s.pth", best["metric"], best["value"],
                             best["dataset"], best["iteration"], BEST_NAME)
        if self.final_error is not None:
            msg = failure_message("The evaluation of DATASETS.TEST after training (SOLVER.MAX_ITER {})".format(
                self.max_iter), self.final_error, saved_weights(self.checkpointer))
            self.logger.error(msg)
            raise EvaluationError(msg)


def validation_pictures(dataset, predictions, count, score_threshold=0.3, names=None):
    """Up to ``count`` BGR uint8 pictures: images 0, 1, ... of ``dataset`` (transforms off: it
    yields (PIL RGB image, target, index)) with the detections of ``predictions`` (BoxLists of the
    same indices, any size, fields "scores", "labels") scoring >= ``score_threshold`` drawn."""
    pictures = []
    for index in range(min(count, len(dataset), len(predictions))):
        image = np.asarray(dataset[index][0].convert("RGB"))[:, :, ::-1].copy()
        boxes = predictions[index].resize((image.shape[1], image.shape[0])).convert("xyxy")
        keep = boxes.get_field("scores") >= score_threshold
        draw_detections(image, boxes.bbox[keep].numpy(), boxes.get_field("labels")[keep].tolist(),
                        boxes.get_field("scores")[keep].tolist(), names=names)
        pictures.append(image)
    return pictures


def make_periodic_evaluator(cfg, run_eval, checkpointer, arguments, grad_scaler=None, events=None, logger=None):
    """The :class:`PeriodicEvaluator` of SOLVER.TEST_PERIOD (None when it is 0 or DATASETS.TEST is
    empty), with pictures from the first DATASETS.TEST entry; the one place that reads those keys."""
    logger = logger or logging.getLogger("fcos_core.trainer")
    if cfg.SOLVER.TEST_PERIOD <= 0:
        return None
    if not cfg.DATASETS.TEST:
        logger.warning("SOLVER.TEST_PERIOD is %d but DATASETS.TEST is empty: no evaluation during training",
                       cfg.SOLVER.TEST_PERIOD)
        return None

    def load_picture_dataset():
        catalog = load_dataset_catalog(cfg.PATHS_CATALOG)
        return build_dataset([cfg.DATASETS.TEST[0]], None, catalog, is_train=False)[0]

    return PeriodicEvaluator(run_eval, cfg.DATASETS.TEST, checkpointer, arguments, cfg.SOLVER.MAX_ITER,
                             grad_scaler=grad_scaler, events=events, load_picture_dataset=load_picture_dataset,
                             output_dir=cfg.OUTPUT_DIR, logger=logger)
