"""The training and testing commands end to end on a tiny generated shapes dataset, and the loop's
safety nets (non-finite loss, random state, loss curves)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fcos_core.engine.trainer import TrainOptions, do_train
from fcos_core.utils.loss_curves import plot_loss_curves
from fcos_core.utils.rng import rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64",
    "MODEL.FCOS.NUM_CONVS", "1",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160",
    "SOLVER.IMS_PER_BATCH", "2", "TEST.IMS_PER_BATCH", "4",
    "SOLVER.WARMUP_ITERS", "2", "DATALOADER.NUM_WORKERS", "0",
]


def _run(script, args, env_extra, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **env_extra)
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / script), *args], cwd=str(ROOT), env=env,
        capture_output=True, text=True, timeout=timeout,
    )


def _ap_from_results(folder):
    return json.loads((folder / "coco_results.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train_net")
    env = {"FCOS_DATA_DIR": str(tmp / "data"), "FCOS_SHAPES_NUM_IMAGES": "8"}
    out = tmp / "out"
    res = _run("train_net.py", ["--config-file", "configs/quickstart/fcos_shapes.yaml", *TINY,
                                "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "OUTPUT_DIR", str(out)], env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return tmp, env, out, res


def test_train_net_writes_checkpoints_curves_and_evaluation(trained):
    tmp, env, out, res = trained
    for name in ("model_0000003.pth", "model_final.pth", "last_checkpoint", "log.txt", "metrics.json",
                 "loss_curves.png", "config.yml"):
        assert (out / name).exists(), name
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert records[-1]["iteration"] == 6 and all(math.isfinite(r["loss"]) for r in records)
    folder = out / "inference" / "shapes_val"
    assert (folder / "bbox.json").exists() or (folder / "coco_results.json").exists()
    assert "AP" in (out / "log.txt").read_text()


def test_test_net_reproduces_the_ap_of_training(trained):
    tmp, env, out, _ = trained
    first = (out / "inference" / "shapes_val" / "coco_results.json").read_text()
    test_out = tmp / "test_out"
    res = _run("test_net.py", ["--config-file", "configs/quickstart/fcos_shapes.yaml", *TINY,
                               "MODEL.WEIGHT", str(out / "model_final.pth"), "OUTPUT_DIR", str(test_out)], env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    again = (test_out / "inference" / "shapes_val" / "coco_results.json").read_text()
    assert json.loads(again) == json.loads(first)


def test_rerunning_a_finished_training_resumes_and_does_nothing(trained):
    tmp, env, out, _ = trained
    before = (out / "model_final.pth").stat().st_mtime_ns
    res = _run("train_net.py", ["--config-file", "configs/quickstart/fcos_shapes.yaml", "--skip-test", *TINY,
                                "SOLVER.MAX_ITER", "6", "OUTPUT_DIR", str(out)], env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "nothing to do" in res.stdout
    assert (out / "model_final.pth").stat().st_mtime_ns == before


def test_wrong_key_on_the_command_line_fails_before_any_work(tmp_path):
    out = tmp_path / "never"
    res = _run("train_net.py", ["--config-file", "configs/quickstart/fcos_shapes.yaml",
                                "SOLVER.BASE_LRR", "0.1", "OUTPUT_DIR", str(out)],
               {"FCOS_DATA_DIR": str(tmp_path / "data")}, timeout=120)
    assert res.returncode != 0
    assert "SOLVER.BASE_LRR" in res.stderr and "SOLVER.BASE_LR" in res.stderr
    assert not out.exists() and not (tmp_path / "data").exists()


def test_conflicting_test_keys_fail_before_training(tmp_path, monkeypatch):
    """TEST.WINOGRAD with TEST.AMP would fail at the first evaluation, hours later: train() checks
    the inference options first, before any model, data or output folder."""
    from fcos_core.config import load_config
    from fcos_core.engine import defaults

    monkeypatch.setattr(defaults, "build_training", lambda *a: pytest.fail("training was set up"))
    cfg = load_config(str(ROOT / "configs" / "quickstart" / "fcos_shapes.yaml"),
                      ["TEST.WINOGRAD", "True", "TEST.AMP", "True", "TEST.AMP_DTYPE", "bfloat16",
                       "OUTPUT_DIR", str(tmp_path / "never")])
    with pytest.raises(ValueError, match="TEST.WINOGRAD .* but TEST.AMP runs torch.bfloat16 convolutions"):
        defaults.train(cfg, 0, False)
    assert not (tmp_path / "never").exists()


class _Saver:
    def __init__(self):
        self.saved = []

    def save(self, name, **kwargs):
        self.saved.append((name, kwargs))
        return f"/ckpt/{name}.pth"


class _StepImages:
    """A stand-in for an ImageList that tells the fake model which iteration it is."""

    def __init__(self, step):
        self.step = step
        self.tensors = torch.zeros(1)

    def to(self, device):
        return self


def _train_fake(losses_at, max_iter):
    """do_train on a Linear(2, 1) whose loss dict is ``losses_at(step, weight_sum)``; returns the
    raised FloatingPointError's pytest info, the checkpointer, and (weights before, module)."""
    lin = torch.nn.Linear(2, 1)
    before = {k: v.clone() for k, v in lin.state_dict().items()}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, images, targets):
            return losses_at(images.step, self.lin.weight.sum())

    loader = [(_StepImages(i), [], ()) for i in range(1, max_iter + 1)]
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    saver = _Saver()
    with pytest.raises(FloatingPointError) as info:
        do_train(Model(), loader, opt, sched, saver, {"iteration": 0}, TrainOptions(max_iter=max_iter))
    return info, saver, before, lin


def test_non_finite_loss_saves_the_last_good_state_and_names_the_loss():
    def losses_at(step, w):
        return {"loss_cls": w * 0 + (float("nan") if step == 3 else 1.0), "loss_reg": w * 0}

    info, saver, _, _ = _train_fake(losses_at, 5)
    info.match(r"iteration 3: loss_cls = nan")
    name, kwargs = saver.saved[-1]
    assert name == "model_last_good" and kwargs["iteration"] == 2


def test_non_finite_gradients_with_finite_losses_stop_before_the_step():
    """float32 / bfloat16 (no GradScaler): a NaN gradient would turn every weight into NaN; the
    trainer stops before the step, saves the untouched weights and says the losses were finite."""
    def losses_at(step, w):
        if step == 2:  # sqrt'(0) = inf, times 0: a NaN gradient from a loss of 0
            return {"loss_cls": torch.sqrt(w * 0), "loss_reg": w * 0}
        return {"loss_cls": w * 0 + 1.0, "loss_reg": w * 0}

    info, saver, before, lin = _train_fake(losses_at, 3)
    info.match(r"gradients became non-finite at iteration 2 .*loss_cls = -?0\.0000")
    name, kwargs = saver.saved[-1]
    assert name == "model_last_good" and kwargs["iteration"] == 1
    for k, v in lin.state_dict().items():  # step 1 had zero gradients; step 2 was not taken
        assert torch.isfinite(v).all() and torch.equal(v, before[k]), k


def test_rng_state_round_trip_survives_weights_only_load(tmp_path):
    import random

    import numpy as np

    state = rng_state()
    path = tmp_path / "rng.pth"
    torch.save({"rng_state": state}, path)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(torch.load(path, weights_only=True)["rng_state"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_plot_loss_curves(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text("".join(json.dumps({"iteration": i, "loss": 1.0 / i, "loss_cls": 0.5 / i, "lr": 0.01}) + "\n"
                               for i in range(1, 5)))
    png = plot_loss_curves(str(metrics), str(tmp_path / "curves.png"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match="no records"):
        plot_loss_curves(str(tmp_path / "empty.json"), str(tmp_path / "x.png"))


@pytest.fixture(scope="module")
def trained_with_test_period(tmp_path_factory):
    """6 iterations evaluating shapes_val every 3 (SOLVER.TEST_PERIOD), then resumed to 9."""
    tmp = tmp_path_factory.mktemp("test_period")
    env = {"FCOS_DATA_DIR": str(tmp / "data"), "FCOS_SHAPES_NUM_IMAGES": "8", "OMP_NUM_THREADS": "1"}
    out = tmp / "out"
    args = ["--config-file", "configs/quickstart/fcos_shapes.yaml", *TINY, "SOLVER.CHECKPOINT_PERIOD", "3",
            "SOLVER.TEST_PERIOD", "3", "SOLVER.LOG_PERIOD", "2", "OUTPUT_DIR", str(out)]
    first = _run("train_net.py", [*args, "SOLVER.MAX_ITER", "6"], env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return out, first, args, env


def _eval_records(out):
    return [r for r in map(json.loads, (out / "metrics.json").read_text().splitlines()) if "eval" in r]


def _assert_model_best_is_the_first_best(out):
    records = _eval_records(out)
    aps = [r["eval"]["shapes_val"]["AP"] for r in records]
    best_at = records[aps.index(max(aps))]["iteration"]
    best = torch.load(out / "model_best.pth", weights_only=True)
    assert best["best"]["iteration"] == best_at and best["best"]["value"] == pytest.approx(max(aps))
    assert best["best"]["dataset"] == "shapes_val" and best["best"]["metric"] == "AP"
    return best, best_at


def test_test_period_evaluates_keeps_model_best_and_draws_ap(trained_with_test_period):
    out, res, _, _ = trained_with_test_period
    records = _eval_records(out)
    assert [r["iteration"] for r in records] == [3, 6]
    assert set(records[0]["eval"]["shapes_val"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    best, best_at = _assert_model_best_is_the_first_best(out)
    same = torch.load(out / ("model_0000003.pth" if best_at == 3 else "model_final.pth"), weights_only=True)
    assert all(torch.equal(v, same["model"][k]) for k, v in best["model"].items())
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    log = (out / "log.txt").read_text()
    assert log.count("Start evaluation on shapes_val") == 2  # the one at MAX_ITER is the final test
    assert "Best AP" in log and (out / "inference" / "shapes_val" / "coco_results.json").exists()
    png = (out / "loss_curves.png").read_bytes()
    assert int.from_bytes(png[16:20], "big") == 1600  # three panels (16 in at 100 dpi), two are 1100
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_resuming_with_test_period_keeps_the_best(trained_with_test_period):
    out, _, args, env = trained_with_test_period
    before = torch.load(out / "model_best.pth", weights_only=True)["best"]
    res = _run("train_net.py", [*args, "SOLVER.MAX_ITER", "9"], env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Best so far: AP {:.4f} on shapes_val at iteration {}".format(before["value"], before["iteration"]) \
        in res.stdout
    assert [r["iteration"] for r in _eval_records(out)] == [3, 6, 9]
    _assert_model_best_is_the_first_best(out)


def _broken_test_set(tmp):
    (tmp / "broken.json").write_text('{"images": [{"id": 1, "file_name": "a.png"')
    (tmp / "images").mkdir(exist_ok=True)
    return "('{}:{}',)".format(tmp / "broken.json", tmp / "images")


@pytest.mark.parametrize("test_period", ["0", "1"])
def test_an_evaluation_that_cannot_run_says_where_the_trained_model_is(tmp_path_factory, test_period):
    tmp = tmp_path_factory.mktemp("broken_test")
    env = {"FCOS_DATA_DIR": str(tmp / "data"), "FCOS_SHAPES_NUM_IMAGES": "4", "OMP_NUM_THREADS": "1"}
    out = tmp / "out"
    res = _run("train_net.py", ["--config-file", "configs/quickstart/fcos_shapes.yaml", *TINY, "SOLVER.MAX_ITER", "2",
                                "SOLVER.TEST_PERIOD", test_period, "DATASETS.TEST", _broken_test_set(tmp),
                                "OUTPUT_DIR", str(out)], env)
    assert res.returncode != 0
    assert (out / "model_final.pth").exists() and (out / "last_checkpoint").read_text() == "model_final.pth"
    last_line = res.stderr.strip().splitlines()[-1]
    assert last_line.startswith("fcos_core.engine.periodic_eval.EvaluationError: ")
    assert "broken.json" in last_line and "saved at {}".format(out / "model_final.pth") in last_line
    if test_period == "1":  # the evaluation at iteration 1 failed too, and training went on
        log = (out / "log.txt").read_text()
        assert "iteration 1 failed" in log and "Training goes on" in log and "Traceback" in log
