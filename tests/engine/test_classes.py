"""MODEL.FCOS.NUM_CLASSES against the training set, class names in checkpoints, and fine-tuning
versus resuming, through tools/train_net.py and tools/test_net.py on a tiny shapes dataset."""
import json
import logging

import pytest
import torch
import yaml
from test_train_net import TINY, _run  # noqa: I100  (a sibling test module: its tiny settings and runner)

from fcos_core.config import load_config
from fcos_core.data.datasets.shapes import CATEGORIES
from fcos_core.engine.classes import category_names, check_num_classes, compare_class_names, load_categories
from fcos_core.engine.coco_classes import COCO_CATEGORIES
from fcos_core.modeling.detector import build_detection_model
from fcos_core.solver import make_lr_scheduler, make_optimizer
from fcos_core.utils.checkpoint import Checkpointer

CONFIG = "configs/quickstart/fcos_shapes.yaml"
SHAPES = ["__background", *CATEGORIES]


def test_too_few_classes_is_an_error_naming_both_numbers_the_dataset_and_the_key(caplog):
    names = ["__background", "a", "b", "c"]
    with pytest.raises(ValueError) as info:
        check_num_classes(3, names, ("my_train",))
    msg = str(info.value)
    assert "MODEL.FCOS.NUM_CLASSES is 3" in msg and "my_train has 3 classes" in msg
    assert "Set MODEL.FCOS.NUM_CLASSES 4, or 0" in msg
    with caplog.at_level(logging.WARNING):
        assert check_num_classes(6, names, ("my_train",)) == names
    assert "2 classifier outputs will never see an example" in caplog.text
    caplog.clear()
    assert check_num_classes(4, names, ("my_train",)) == names and not caplog.text


def test_category_names_prefer_the_json_then_the_checkpoint_then_coco(tmp_path, capsys):
    cats = tmp_path / "instances.json"
    cats.write_text(json.dumps({"categories": [{"id": 12, "name": "z"}, {"id": 3, "name": "x"}, {"id": 7, "name": "y"}]}))
    ckpt = ["__background", "p", "q", "r"]
    assert category_names(3, str(cats), ["n1", "n2", "n3"], ckpt) == ["__background", "x", "y", "z"]
    assert category_names(3, None, ["n1", "n2", "n3"], ckpt) == ckpt
    assert category_names(3, None, ["n1", "n2", "n3"]) == ["__background", "n1", "n2", "n3"]
    assert category_names(80) == COCO_CATEGORIES
    assert capsys.readouterr().err == ""
    assert category_names(2) == ["__background", "class 1", "class 2"]
    assert "--categories-from" in capsys.readouterr().err
    with pytest.raises(ValueError, match="the checkpoint's categories name 3 classes but the model has 5"):
        category_names(5, checkpoint_names=ckpt)
    assert load_categories(str(cats))[1:] == ["x", "y", "z"]


def test_a_test_set_with_other_classes_is_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert compare_class_names(SHAPES, SHAPES, "shapes_val")
        assert not compare_class_names(SHAPES, ["__background", "cat"] + SHAPES[2:], "pets_val")
    assert "label 1: model 'circle', pets_val 'cat'" in caplog.text


def _source_checkpoint(path, num_classes, iteration=500):
    """A tiny quickstart model of ``num_classes`` saved as after ``iteration`` steps of training
    (optimizer momentum, scheduler, iteration)."""
    cfg = load_config(CONFIG, TINY + ["MODEL.FCOS.NUM_CLASSES", str(num_classes)])
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
    for _ in range(iteration):
        scheduler.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    Checkpointer(model, optimizer, scheduler, str(path.parent), True).save(path.stem, iteration=iteration)
    (path.parent / "last_checkpoint").unlink()
    return model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Fine-tune an 81-class model to the shapes (NUM_CLASSES 0: from the data) for 2 iterations,
    then run again with MAX_ITER 3 (a resume)."""
    tmp = tmp_path_factory.mktemp("classes")
    env = {"FCOS_DATA_DIR": str(tmp / "data"), "FCOS_SHAPES_NUM_IMAGES": "8"}
    source = tmp / "coco" / "model_coco.pth"
    _source_checkpoint(source, 81)
    out = tmp / "out"
    args = ["--config-file", CONFIG, "--skip-test", *TINY, "MODEL.FCOS.NUM_CLASSES", "0",
            "MODEL.WEIGHT", str(source), "SOLVER.CHECKPOINT_PERIOD", "1000", "OUTPUT_DIR", str(out)]
    first = _run("train_net.py", args + ["SOLVER.MAX_ITER", "2"], env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = _run("train_net.py", args + ["SOLVER.MAX_ITER", "3"], env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return tmp, env, source, out, first.stdout + first.stderr, second.stdout + second.stderr


def test_num_classes_0_is_taken_from_the_data_and_recorded(runs):
    _, _, _, out, log, _ = runs
    assert "MODEL.FCOS.NUM_CLASSES 7 from DATASETS.TRAIN" in log
    assert yaml.safe_load((out / "config.yml").read_text())["MODEL"]["FCOS"]["NUM_CLASSES"] == 7
    saved = torch.load(out / "model_final.pth", weights_only=True)
    assert saved["categories"] == SHAPES and saved["model"]["rpn.head.cls_logits.bias"].shape == (6,)


def test_fine_tuning_starts_a_fresh_schedule_and_lists_what_was_skipped(runs):
    _, _, source, _, log, _ = runs
    assert f"Initialising from {source} (fine-tuning" in log
    assert "from iteration 0" in log and "Resuming" not in log
    assert "rpn.head.cls_logits.weight (model (6, 64, 3, 3), file (80, 64, 3, 3))" in log


def test_a_second_run_resumes_and_says_model_weight_is_ignored(runs):
    _, _, source, out, _, log = runs
    assert f"Resuming from {out / 'model_final.pth'}" in log and f"MODEL.WEIGHT {source} is ignored" in log
    assert "from iteration 2" in log
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 3


def test_test_net_runs_a_num_classes_0_config_from_the_checkpoint(runs):
    tmp, env, _, out, _, _ = runs
    res = _run("test_net.py", ["--config-file", CONFIG, *TINY, "MODEL.FCOS.NUM_CLASSES", "0",
                               "MODEL.WEIGHT", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp / "test")], env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "MODEL.FCOS.NUM_CLASSES 7 from the checkpoint" in res.stdout + res.stderr
    assert "not those of" not in res.stdout + res.stderr  # the checkpoint's names are shapes_val's
    assert (tmp / "test" / "inference" / "shapes_val" / "coco_results.json").exists()


def test_too_few_classes_stops_training_before_the_first_iteration(runs):
    tmp, env, _, _, _, _ = runs
    out = tmp / "too_few"
    res = _run("train_net.py", ["--config-file", CONFIG, "--skip-test", *TINY, "MODEL.FCOS.NUM_CLASSES", "4",
                                "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)], env)
    assert res.returncode != 0
    assert "MODEL.FCOS.NUM_CLASSES is 4 (3 classes + background) but the training set shapes_train has 6" in res.stderr
    assert not list(out.glob("model_*.pth"))
