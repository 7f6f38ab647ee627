"""docs/custom_dataset.md, shortened: the walk's commands on a tiny "desk" dataset, so that it cannot rot.

The example generator writes a tool-style COCO json (no area, no iscrowd, category ids 3, 7, 12, 20,
JPEGs in sub-folders, negatives); then a 4-iteration training with evaluation during training,
tools/test_net.py, the ``fcos`` command without --categories-from, the ONNX export and
docs/examples/run_onnx.py run as the doc runs them, with smaller sizes. About 40 s on two cores.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
NAMES = ["coin", "key", "pen", "die"]
# the doc's recipe at a smaller scale: one tower conv, 160 px, 4 iterations, evaluation at 2 and 4
SMALL = ["MODEL.FCOS.NUM_CONVS", "1", "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "256",
         "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256", "SOLVER.IMS_PER_BATCH", "2",
         "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2",
         "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "4"]


def run(args, **kwargs):
    """Run a command at the repository root with one thread; fail with its output if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, env=env, **kwargs)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    """(dataset folder, DATASETS.TRAIN value, DATASETS.TEST value) of a 12 + 6 image desk dataset."""
    folder = tmp_path_factory.mktemp("desk")
    run([sys.executable, EXAMPLES / "make_desk_dataset.py", "--out", folder, "--train", "12", "--val", "6"])
    return (folder, "('{0}/train.json:{0}/images',)".format(folder),
            "('{0}/val.json:{0}/images',)".format(folder))


@pytest.fixture(scope="module")
def trained(desk, tmp_path_factory):
    """OUTPUT_DIR of the 4-iteration training from scratch with SOLVER.TEST_PERIOD 2."""
    _, train, test = desk
    out = tmp_path_factory.mktemp("scratch")
    run([sys.executable, "tools/train_net.py", "--config-file", "configs/quickstart/fcos_shapes.yaml",
         "DATASETS.TRAIN", train, "DATASETS.TEST", test, "MODEL.FCOS.NUM_CLASSES", "0",
         "SOLVER.TEST_PERIOD", "2", "OUTPUT_DIR", out, *SMALL])
    return out


def test_generator_writes_what_an_annotation_tool_exports(desk):
    folder = desk[0]
    data = json.loads((folder / "train.json").read_text())
    assert [c["id"] for c in data["categories"]] == [3, 7, 12, 20]
    assert [c["name"] for c in data["categories"]] == NAMES
    assert data["annotations"] and all("area" not in a and "iscrowd" not in a for a in data["annotations"])
    assert all("/" in im["file_name"] and (folder / "images" / im["file_name"]).is_file() for im in data["images"])
    annotated = {a["image_id"] for a in data["annotations"]}
    assert 6 not in annotated and len(annotated) < len(data["images"])  # image 6 is a negative
    again = run([sys.executable, EXAMPLES / "make_desk_dataset.py", "--out", folder / "again", "--train", "12",
                 "--val", "6"])
    assert "12 images" in again.stdout
    assert (folder / "again" / "train.json").read_text() == (folder / "train.json").read_text()


def test_training_evaluates_with_class_names(trained):
    metrics = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    evals = [m["iteration"] for m in metrics if "eval" in m]
    assert evals == [2, 4]
    (results,) = (trained / "inference").iterdir()
    assert results.name.startswith("val-")
    assert list(json.loads((results / "per_class_ap.json").read_text())) == NAMES
    assert json.loads((results / "thresholds.json").read_text())["category_ids"] == [3, 7, 12, 20]
    best = torch.load(trained / "model_best.pth", map_location="cpu", weights_only=False)
    assert best["categories"] == ["__background"] + NAMES
    assert best["best"]["iteration"] in (2, 4) and (trained / "loss_curves.png").stat().st_size > 0
    assert "NUM_CLASSES: 5" in (trained / "config.yml").read_text()


def test_test_net_fcos_command_and_onnx_name_the_classes(desk, trained, tmp_path):
    folder, _, test = desk
    out = tmp_path / "test"
    run([sys.executable, "tools/test_net.py", "--config-file", "configs/quickstart/fcos_shapes.yaml",
         "DATASETS.TEST", test, "MODEL.FCOS.NUM_CLASSES", "0", "MODEL.WEIGHT", trained / "model_best.pth",
         "OUTPUT_DIR", out, *SMALL])
    (results,) = (out / "inference").iterdir()
    assert list(json.loads((results / "per_class_ap.json").read_text())) == NAMES
    # an untrained-looking model scores below INFERENCE_TH: lower it so that something is listed
    fcos = Path(sys.executable).parent / "fcos"
    run([fcos, folder / "images" / "session3", "--config-file", trained / "config.yml", "--weights",
         trained / "model_final.pth", "--output", tmp_path / "fcos", "--json", "--thresholds", "0",
         "MODEL.FCOS.INFERENCE_TH", "0.0"])
    listed = [json.loads(p.read_text()) for p in sorted((tmp_path / "fcos").glob("*.json"))]
    assert len(listed) == 6
    categories = {d["category"] for item in listed for d in item["detections"]}
    assert categories and categories <= set(NAMES)
    onnx_file = tmp_path / "desk.onnx"
    run([sys.executable, "tools/export_onnx.py", "--config-file", trained / "config.yml", "--output", onnx_file,
         "MODEL.WEIGHT", trained / "model_final.pth"])
    printed = run([sys.executable, EXAMPLES / "run_onnx.py", onnx_file, folder / "images/session3/img_0001.jpg",
                   "--min-size", "160", "--max-size", "256", "--threshold", "0"]).stdout
    assert f"classes {NAMES}" in printed and "img_0001.jpg:" in printed
