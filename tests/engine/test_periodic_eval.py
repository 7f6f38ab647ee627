"""Evaluation during training (SOLVER.TEST_PERIOD): when do_train calls the evaluation, what lands in
metrics.json, model_best.pth chosen by bbox AP and kept across a resume, evaluations that fail,
and the TensorBoard event files (with and without the package)."""
import json
import logging
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fcos_core.data.datasets.evaluation.coco.coco_eval import COCOResults
from fcos_core.engine.periodic_eval import (
    EvaluationError, PeriodicEvaluator, eval_metrics, evaluate_after_training, validation_pictures,
)
from fcos_core.engine.resume import restore_resume_state
from fcos_core.engine.trainer import TrainOptions, do_train
from fcos_core.structures.bounding_box import BoxList
from fcos_core.utils.checkpoint import Checkpointer, safe_torch_load
from fcos_core.utils.events import EventWriter, make_event_writer


class _Images:
    tensors = torch.zeros(1)

    def to(self, device):
        return self


class _Model(torch.nn.Module):
    """A detector stand-in: loss = sum of a Linear's weight, so each SGD step changes every weight."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, images, targets):
        return {"loss_cls": self.lin.weight.sum() + 1.0, "loss_reg": self.lin.bias.sum() * 0}


def _coco_result(ap):
    res = COCOResults("bbox")
    for k, v in zip(COCOResults.METRICS["bbox"], [ap, ap + 0.2, ap / 2, -1, ap, ap]):
        res.results["bbox"][k] = v
    return res, {}


def _train(tmp_path, aps, max_iter, start=None, period=2, fail_at=(), events=None, arguments=None):
    """do_train with a real Checkpointer in ``tmp_path`` and an evaluator whose bbox AP at
    iteration i is ``aps[i]``; returns (evaluator, model, record of (iteration, weight) per eval)."""
    model = _Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    ckpt = Checkpointer(model, opt, sched, save_dir=str(tmp_path), save_to_disk=True)
    arguments = arguments if arguments is not None else {"iteration": 0}
    if start is not None:
        arguments = restore_resume_state(ckpt.load(None))
    seen = []

    def run_eval():
        it = arguments["iteration"]
        assert not model.training
        seen.append((it, model.lin.weight.detach().clone()))
        if it in fail_at:
            raise KeyError("iscrowd")
        return [_coco_result(aps[it]), None]

    def run_eval_in_eval_mode():
        model.eval()
        return run_eval()

    evaluator = PeriodicEvaluator(run_eval_in_eval_mode, ["val_a", "val_b"], ckpt, arguments, max_iter, events=events)
    loader = [(_Images(), [], ()) for _ in range(arguments["iteration"] + 1, max_iter + 1)]
    options = TrainOptions(max_iter=max_iter, checkpoint_period=period, log_period=1, test_period=period,
                           metrics_path=str(tmp_path / "metrics.json"))
    do_train(model, loader, opt, sched, ckpt, arguments, options, eval_fn=evaluator, events=events)
    assert model.training
    return evaluator, model, seen


def _records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]


def test_evaluations_land_in_metrics_at_each_period_and_at_the_last_iteration(tmp_path):
    aps = {2: 0.1, 4: 0.3, 6: 0.2, 7: 0.05}
    _train(tmp_path, aps, max_iter=7)
    evals = [r for r in _records(tmp_path) if "eval" in r]
    assert [r["iteration"] for r in evals] == [2, 4, 6, 7]
    assert [r["eval"]["val_a"]["AP"] for r in evals] == [aps[i] for i in (2, 4, 6, 7)]
    assert set(evals[0]["eval"]) == {"val_a"}  # rank-0-less entries (None) are left out
    assert evals[0]["eval"]["val_a"]["APs"] is None  # pycocotools' -1: no ground truth of that size
    assert [r["iteration"] for r in _records(tmp_path) if "lr" in r] == list(range(1, 8))


def test_model_best_holds_the_weights_of_the_best_ap_and_last_checkpoint_does_not_name_it(tmp_path):
    aps = {2: 0.1, 4: 0.3, 6: 0.3, 8: 0.2}  # a tie keeps the earlier one
    evaluator, _, seen = _train(tmp_path, aps, max_iter=8)
    best = safe_torch_load(str(tmp_path / "model_best.pth"))
    assert best["best"] == {"value": 0.3, "dataset": "val_a", "metric": "AP", "iteration": 4}
    assert best["iteration"] == 4
    assert torch.equal(best["model"]["lin.weight"], dict(seen)[4])
    assert not torch.equal(best["model"]["lin.weight"], dict(seen)[8])
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    # the periodic and final checkpoints carry the best, so that a resume knows it
    assert safe_torch_load(str(tmp_path / "model_final.pth"))["best"]["iteration"] == 4
    assert safe_torch_load(str(tmp_path / "model_0000002.pth"))["best"]["iteration"] == 2


def test_a_resumed_run_keeps_the_better_model_best(tmp_path):
    _train(tmp_path, {2: 0.1, 4: 0.5}, max_iter=4)
    before = safe_torch_load(str(tmp_path / "model_best.pth"))
    evaluator, _, seen = _train(tmp_path, {6: 0.3, 8: 0.2}, max_iter=8, start=True)
    assert [it for it, _ in seen] == [6, 8]
    after = safe_torch_load(str(tmp_path / "model_best.pth"))
    assert after["best"] == before["best"] and after["best"]["iteration"] == 4
    assert torch.equal(after["model"]["lin.weight"], before["model"]["lin.weight"])
    # a better AP after the resume does replace it
    _train(tmp_path, {10: 0.7}, max_iter=10, start=True)
    assert safe_torch_load(str(tmp_path / "model_best.pth"))["best"]["iteration"] == 10


def test_a_best_from_another_folder_is_not_trusted(tmp_path, caplog):
    other = {"value": 0.9, "dataset": "val_a", "metric": "AP", "iteration": 100}
    with caplog.at_level(logging.INFO):
        evaluator, _, _ = _train(tmp_path, {2: 0.2}, max_iter=2, arguments={"iteration": 0, "best": other})
    assert "has no model_best.pth" in caplog.text
    assert safe_torch_load(str(tmp_path / "model_best.pth"))["best"]["value"] == 0.2


def test_a_failing_evaluation_is_logged_once_and_training_goes_on(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        evaluator, _, seen = _train(tmp_path, {4: 0.2, 6: 0.1}, max_iter=6, fail_at=(2,))
    assert [it for it, _ in seen] == [2, 4, 6]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    msg = errors[0].getMessage()
    assert "iteration 2 failed (KeyError: 'iscrowd')" in msg and "Training goes on" in msg
    assert "no checkpoint has been written yet" in msg  # the evaluation runs before iteration 2's checkpoint
    assert [r["iteration"] for r in _records(tmp_path) if "eval" in r] == [4, 6]
    evaluator.finish()  # the final evaluation worked: nothing to raise


def test_the_same_failure_again_is_logged_without_its_traceback(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        _train(tmp_path, {6: 0.1}, max_iter=6, fail_at=(2, 4))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.exc_info is not None for e in errors] == [True, False]
    assert "iteration 4 failed" in errors[1].getMessage() and "traceback is above" in errors[1].getMessage()
    assert "saved at {}".format(tmp_path / "model_0000002.pth") in errors[1].getMessage()


def test_a_failing_final_evaluation_stops_after_model_final_and_says_where_it_is(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        evaluator, _, _ = _train(tmp_path, {2: 0.2}, max_iter=4, fail_at=(4,))
    assert (tmp_path / "model_final.pth").exists()
    assert "model_final.pth is saved next" in caplog.text and "saved at {}".format(tmp_path / "model_0000002.pth") \
        in caplog.text
    with pytest.raises(EvaluationError, match=r"KeyError.*saved at .*model_final\.pth"):
        evaluator.finish()


def test_the_test_after_training_names_the_saved_model(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_final.pth")

    def broken():
        raise FileNotFoundError("no such file: val.json")

    with pytest.raises(EvaluationError) as info:
        evaluate_after_training(broken, str(tmp_path))
    assert "val.json" in str(info.value) and str(tmp_path / "model_final.pth") in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert evaluate_after_training(lambda: ["ok"], str(tmp_path)) == ["ok"]


def test_eval_metrics_of_coco_and_voc_results():
    metrics = eval_metrics(_coco_result(0.4))
    assert list(metrics) == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert metrics["AP"] == 0.4 and metrics["AP50"] == pytest.approx(0.6) and metrics["APs"] is None
    assert eval_metrics({"ap": np.array([0.5]), "map": 0.5}) == {"AP50": 0.5}
    assert eval_metrics(None) is None


class _PictureDataset:
    class_names = ["__background", "square"]

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return Image.new("RGB", (64, 48), (10, 20, 30)), None, index


def _prediction():
    boxes = BoxList(torch.tensor([[4.0, 4.0, 20.0, 20.0], [30.0, 2.0, 40.0, 12.0]]), (32, 24), mode="xyxy")
    boxes.add_field("scores", torch.tensor([0.9, 0.1]))
    boxes.add_field("labels", torch.tensor([1, 1]))
    return boxes


def test_validation_pictures_draw_the_confident_detections_at_the_image_size():
    pictures = validation_pictures(_PictureDataset(), [_prediction()] * 3, count=5)
    assert len(pictures) == 3 and pictures[0].shape == (48, 64, 3) and pictures[0].dtype == np.uint8
    changed = np.any(pictures[0] != np.array([30, 20, 10], np.uint8), axis=2)
    assert changed[8:41, 8].any()  # the 0.9 box, scaled by 2 to the image: its left edge at x = 8
    assert not changed[4:24, 60:].any()  # the 0.1 box (x 60..80 scaled) is under the threshold


def test_tensorboard_event_files_hold_losses_lr_ap_and_pictures(tmp_path):
    # tensorboard is part of the [dev] extra that the tests run with: a missing package fails here
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = make_event_writer(str(tmp_path), enabled=True)
    assert events.enabled
    _train(tmp_path, {2: 0.1, 4: 0.3}, max_iter=4, events=events)
    events.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("train/loss", "train/loss_cls", "train/lr", "eval/val_a/AP", "eval/val_a/AP50"):
        assert tag in tags, tags
    assert "eval/val_a/APs" not in tags  # None (no ground truth) is not drawn as a number
    ap = acc.Scalars("eval/val_a/AP")
    assert [(e.step, round(e.value, 6)) for e in ap] == [(2, 0.1), (4, 0.3)]
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [round(e.value, 6) for e in acc.Scalars("train/lr")] == [0.1] * 4


def test_tensorboard_pictures_are_written_from_the_predictions_of_the_evaluation(tmp_path):
    # tensorboard is part of the [dev] extra that the tests run with: a missing package fails here
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fcos_core.data.datasets.evaluation import save_predictions

    folder = tmp_path / "inference" / "val_a"
    folder.mkdir(parents=True)
    save_predictions([_prediction()] * 4, str(folder / "predictions.pth"))
    events = make_event_writer(str(tmp_path), enabled=True)
    ckpt = Checkpointer(torch.nn.Linear(1, 1), save_dir=str(tmp_path), save_to_disk=True)
    evaluator = PeriodicEvaluator(lambda: [_coco_result(0.2)], ["val_a"], ckpt, {"iteration": 5}, 10,
                                  events=events, load_picture_dataset=_PictureDataset, output_dir=str(tmp_path),
                                  num_pictures=2)
    assert evaluator(5)["val_a"]["AP"] == 0.2
    events.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert sorted(acc.Tags()["images"]) == ["eval/val_a/image_0", "eval/val_a/image_1"]
    image = acc.Images("eval/val_a/image_0")[0]
    assert image.step == 5 and (image.width, image.height) == (64, 48)


def test_without_tensorboard_one_line_says_so_and_nothing_is_written(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import now raises ImportError
    with caplog.at_level(logging.INFO):
        events = make_event_writer(str(tmp_path), enabled=True)
    assert type(events) is EventWriter and not events.enabled
    lines = [r.getMessage() for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    assert len(lines) == 1 and "not installed" in lines[0]
    _train(tmp_path, {2: 0.1}, max_iter=2, events=events)
    assert not (tmp_path / "tensorboard").exists()
    assert [r["iteration"] for r in _records(tmp_path) if "eval" in r] == [2]


def test_event_writer_only_on_rank_zero_and_with_an_output_dir(tmp_path):
    assert not make_event_writer(str(tmp_path), enabled=False).enabled
    assert not make_event_writer("", enabled=True).enabled
    assert not os.path.exists(tmp_path / "tensorboard")


def test_a_model_best_saved_after_the_resumed_checkpoint_is_not_overwritten_by_a_worse_one(tmp_path):
    """A crash between a new model_best and the next checkpoint: the resumed checkpoint knows an older
    best, but model_best.pth records the better one, and a worse evaluation must not replace it."""
    _train(tmp_path, {2: 0.1, 4: 0.5}, max_iter=4, period=2)
    # as if the run had crashed after model_best at iteration 4 but before its checkpoint: resume from 2
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth")
    assert safe_torch_load(str(tmp_path / "model_0000002.pth"))["best"]["value"] == 0.1
    before = safe_torch_load(str(tmp_path / "model_best.pth"))
    _train(tmp_path, {4: 0.3, 6: 0.2}, max_iter=6, start=True)
    after = safe_torch_load(str(tmp_path / "model_best.pth"))
    assert after["best"] == before["best"] == {"value": 0.5, "dataset": "val_a", "metric": "AP", "iteration": 4}
    assert torch.equal(after["model"]["lin.weight"], before["model"]["lin.weight"])
