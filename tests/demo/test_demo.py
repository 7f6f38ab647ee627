"""The demo: COCODemo on an OpenCV image, fcos_demo.py on a folder, webcam.py on a video file.

A tiny random FCOS (R-18, 64 FPN channels, one tower conv, 6 classes) whose classification and
centerness biases are set high, so that every location scores ~1 and there is always something to
draw. The scripts run as subprocesses without a display.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from demo.predictor import COCO_CATEGORIES, COCODemo, build_coco_demo, load_categories, load_thresholds_file  # noqa: E402
from fcos_core.config import load_config  # noqa: E402
from fcos_core.modeling.detector import build_detection_model  # noqa: E402

CONFIG = str(ROOT / "configs" / "fcos" / "fcos_R_50_FPN_1x.yaml")
NAMES = ["circle", "ellipse", "square", "triangle", "star", "cross"]
TINY_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.BACKBONE.CONV_BODY", "R-18-FPN-RETINANET",
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64",
    "MODEL.FCOS.NUM_CONVS", "1",
    "MODEL.FCOS.NUM_CLASSES", str(len(NAMES) + 1),
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "200",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(weights path, categories json path) of the tiny model."""
    folder = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    model = build_detection_model(load_config(CONFIG, TINY_OPTS + ["MODEL.WEIGHT", ""]))
    with torch.no_grad():
        model.rpn.head.cls_logits.bias.fill_(8.0)
        model.rpn.head.centerness.bias.fill_(8.0)
    weights = folder / "tiny.pth"
    torch.save({"model": model.state_dict()}, weights)
    categories = folder / "instances.json"
    # ids not in order, to check that names follow the sorted ids
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)][::-1]
    categories.write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    return str(weights), str(categories)


def _image(height, width, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.rectangle(image, (width // 4, height // 4), (3 * width // 4, 3 * height // 4), (0, 200, 255), -1)
    return image


def _headless_env():
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env


def _run(script, *args):
    cmd = [sys.executable, str(ROOT / "demo" / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_headless_env(), timeout=300)


def _model_args(tiny):
    weights, categories = tiny
    return ["--config-file", CONFIG, "--weights", weights, "--categories-from", categories,
            "--min-image-size", "0"]


def test_compute_prediction_is_in_original_image_coordinates(tiny):
    weights, categories = tiny
    cfg = load_config(CONFIG, TINY_OPTS + ["MODEL.WEIGHT", weights])
    demo = COCODemo(cfg, 0.5, min_image_size=None, categories=load_categories(categories))
    image = _image(150, 230, seed=0)
    before = image.copy()
    predictions = demo.compute_prediction(image)
    assert predictions.size == (230, 150) and len(predictions) > 0
    boxes = predictions.bbox
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 230).all() and (boxes[:, 3] <= 150).all()
    # the model ran at 128 x 196 (short side 128), so the boxes were scaled up
    assert boxes[:, 2].max() > 196 or boxes[:, 3].max() > 128

    top = demo.select_top_predictions(predictions)
    scores = top.get_field("scores")
    assert len(top) > 0 and (scores > 0.5).all() and (scores[:-1] >= scores[1:]).all()
    demo.confidence_thresholds_for_classes = torch.full((len(NAMES),), 1.01)
    assert len(demo.select_top_predictions(predictions)) == 0

    drawn = demo.run_on_opencv_image(image)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert np.array_equal(image, before)


def test_category_and_threshold_count_must_match_the_model(tiny, capsys):
    cfg = load_config(CONFIG, TINY_OPTS + ["MODEL.WEIGHT", tiny[0]])
    with pytest.raises(ValueError, match="categories"):
        COCODemo(cfg, 0.5, categories=COCO_CATEGORIES)  # COCO's 80 names for a 6-class model
    with pytest.raises(ValueError, match="thresholds"):
        COCODemo(cfg, [0.5, 0.5], categories=load_categories(tiny[1]))
    # a checkpoint without names, no names given: numbered, with a warning
    demo = COCODemo(cfg, 0.5)
    assert demo.categories == ["__background"] + [f"class {i}" for i in range(1, 7)]
    assert "--categories-from" in capsys.readouterr().err


@pytest.fixture(scope="module")
def named(tiny, tmp_path_factory):
    """The tiny model saved as the trainer saves it: with its class names ("categories")."""
    state = torch.load(tiny[0], weights_only=True)
    path = tmp_path_factory.mktemp("named") / "named.pth"
    torch.save(dict(state, categories=["__background"] + [n.upper() for n in NAMES]), path)
    return str(path)


def test_checkpoint_names_the_classes_without_categories_from(named, tiny, capsys):
    cfg = load_config(CONFIG, TINY_OPTS + ["MODEL.WEIGHT", named])
    assert COCODemo(cfg, 0.5).categories == ["__background"] + [n.upper() for n in NAMES]
    assert "warning" not in capsys.readouterr().err
    # --categories-from wins over the checkpoint
    demo = build_coco_demo(CONFIG, TINY_OPTS, weights=named, categories_from=tiny[1])
    assert demo.categories == ["__background"] + NAMES
    # MODEL.FCOS.NUM_CLASSES 0: the count comes from the checkpoint too
    auto = build_coco_demo(CONFIG, TINY_OPTS + ["MODEL.FCOS.NUM_CLASSES", "0"], weights=named)
    assert auto.cfg.MODEL.FCOS.NUM_CLASSES == len(NAMES) + 1 and auto.categories[1] == NAMES[0].upper()


def test_image_demo_takes_the_names_from_the_checkpoint(named, tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _image(96, 128, seed=1))
    out = tmp_path / "out"
    res = _run("fcos_demo.py", "--config-file", CONFIG, "--weights", named, "--min-image-size", "0",
               str(image), "--output", str(out), "--thresholds", "0.3", *TINY_OPTS)
    assert res.returncode == 0, res.stderr
    assert "categories-from" not in res.stderr and (out / "a.png").exists()


def test_thresholds_file_from_evaluation(tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"category_ids": [1, 2], "names": ["a", "b"],
                                "thresholds": [0.3, -1.0], "f_measures": [0.8, 0.0]}))
    assert load_thresholds_file(str(path), fallback=0.5) == ([0.3, 0.5], ["a", "b"])


def test_image_demo_writes_annotated_images_headless(tiny, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    sizes = {"a.jpg": (120, 160), "b.png": (140, 100)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(images / name), _image(h, w, seed=i))
    out = tmp_path / "out"
    res = _run("fcos_demo.py", *_model_args(tiny), "--images-dir", str(images), "--output", str(out),
               "--thresholds", "0.3", *TINY_OPTS)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(out)) == sorted(sizes)
    for name, (h, w) in sizes.items():
        written = cv2.imread(str(out / name))
        assert written.shape == (h, w, 3)
        assert name in res.stdout
    assert res.stdout.count("inference time:") == 2


def test_image_demo_without_display_or_output_fails_clearly(tiny, tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _image(64, 64, seed=0))
    res = _run("fcos_demo.py", *_model_args(tiny), str(image), *TINY_OPTS)
    assert res.returncode != 0
    assert "--output" in res.stderr
    res = _run("webcam.py", *_model_args(tiny), "--video-input", str(image), *TINY_OPTS)
    assert res.returncode != 0
    assert "--output" in res.stderr


def test_webcam_demo_writes_every_frame_of_a_video(tiny, tmp_path):
    video = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(4):
        writer.write(_image(120, 160, seed=i))
    writer.release()
    out = tmp_path / "out.mp4"
    res = _run("webcam.py", *_model_args(tiny), "--video-input", str(video), "--output", str(out), *TINY_OPTS)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("s / img") == 4
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 4 and frames[0].shape == (120, 160, 3)
