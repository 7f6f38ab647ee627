"""INT8 static quantization of the ONNX export (fcos_core/export/quantize.py, tools/quantize_onnx.py),
run by onnxruntime and OpenVINO (TEST.ONNX_PRECISION int8).

The model is the tiny network of tests/export/test_onnx_export.py (64 FPN channels, one tower
conv), trained in-process for 80 steps on synthetic 128 x 160 scenes (one bright square of class 3
on a dark, noisy background) so that it is confident on a new scene of the same kind: the top
detection scores ~0.6, well above the rest. Calibration: 6 such scenes written as a COCO json
dataset and given as DATASETS.TRAIN.

Tolerance: int8 convolutions with per-channel weights and per-tensor uint8 activations change the
head outputs by a few percent of their range; on a confident model that keeps the top detection's
label and its box within IoU 0.9 of float32's (a 50-pixel box moved by ~2 pixels a side), and its
score within 0.1. Lower-ranked, near-tied detections may reorder, so they are not compared.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fcos_core.config import load_config
from fcos_core.export.quantize import ImageCalibrationReader, int8_path, make_calibration_dataset, quantize_checkpoint
from fcos_core.export.runtime import RUNNERS, OnnxRuntimeRunner, make_backend_runner
from fcos_core.modeling.detector import build_detection_model
from fcos_core.structures.bounding_box import BoxList
from fcos_core.structures.boxlist_ops import boxlist_iou
from fcos_core.structures.image_list import to_image_list

from test_onnx_export import CONFIG, TINY  # noqa: I100  (a sibling test module)

ROOT = Path(__file__).resolve().parents[2]
SIZE = (128, 160)  # h, w of the synthetic scenes
LABEL = 3


def _scene(seed):
    """(uint8 BGR image [128, 160, 3], xyxy box of its square): a 40-60 px bright square on noise."""
    rng = np.random.RandomState(seed)
    image = np.clip(30 + rng.randn(*SIZE, 3) * 5, 0, 255)
    x0, y0, side = rng.randint(10, 60), rng.randint(10, 50), rng.randint(40, 60)
    image[y0:y0 + side, x0:x0 + side] = 220
    return image.astype(np.uint8), [x0, y0, x0 + side - 1, y0 + side - 1]


def _train(cfg, steps=80):
    """The tiny detector of ``cfg`` fitted on synthetic scenes (2 per step, AdamW)."""
    torch.manual_seed(0)
    model = build_detection_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    mean = torch.tensor(cfg.INPUT.PIXEL_MEAN).view(3, 1, 1)
    for step in range(steps):
        images, targets = [], []
        for k in range(2):
            image, box = _scene(2 * step + k)
            images.append(torch.from_numpy(image).permute(2, 0, 1).float() - mean)
            target = BoxList(torch.tensor([box], dtype=torch.float32), (SIZE[1], SIZE[0]))
            target.add_field("labels", torch.tensor([LABEL]))
            targets.append(target)
        loss = sum(model(to_image_list(images, cfg.DATALOADER.SIZE_DIVISIBILITY), targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _write_dataset(folder, seeds, broken=False):
    """A COCO json dataset of scenes ``seeds`` (garbage bytes instead of images when ``broken``);
    returns its DATASETS name ``"<json>:<image folder>"``."""
    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for i, seed in enumerate(seeds):
        image, (x0, y0, x1, y1) = _scene(seed)
        name = "scene{}.png".format(i)
        if broken:
            (images_dir / name).write_bytes(b"not an image")
        else:
            cv2.imwrite(str(images_dir / name), image)
        images.append({"id": i + 1, "file_name": name, "height": SIZE[0], "width": SIZE[1]})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": LABEL, "iscrowd": 0,
                            "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1], "area": float((x1 - x0 + 1) * (y1 - y0 + 1))})
    categories = [{"id": c, "name": "class{}".format(c)} for c in range(1, 7)]
    ann = folder / "train.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return "{}:{}".format(ann, images_dir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config with MODEL.WEIGHT and a calibration DATASETS.TRAIN, model, weights, int8 path, fp32 path)."""
    tmp = tmp_path_factory.mktemp("quantize")
    base = load_config(CONFIG, TINY + ["INPUT.MIN_SIZE_TEST", str(SIZE[0]), "INPUT.MAX_SIZE_TEST", str(SIZE[1])])
    model = _train(base)
    weights = str(tmp / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    train = _write_dataset(tmp / "calib", range(500, 506))
    cfg = load_config(CONFIG, TINY + ["INPUT.MIN_SIZE_TEST", str(SIZE[0]), "INPUT.MAX_SIZE_TEST", str(SIZE[1]),
                                      "MODEL.WEIGHT", weights, "DATASETS.TRAIN", "('{}',)".format(train),
                                      "TEST.ONNX_CACHE_DIR", str(tmp / "cache"), "TEST.BACKEND", "onnxruntime"])
    int8, fp32 = quantize_checkpoint(cfg, weights, num_images=6)
    return cfg, model, weights, int8, fp32


def _detect(runner, image, cfg):
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() - torch.tensor(cfg.INPUT.PIXEL_MEAN).view(3, 1, 1)
    return runner(to_image_list([tensor], cfg.DATALOADER.SIZE_DIVISIBILITY))[0]


def test_int8_graph_quantizes_the_convolutions_only_and_keeps_the_contract(trained):
    cfg, _, _, int8, fp32 = trained
    assert int8 == int8_path(fp32) and os.path.getsize(int8) < 0.5 * os.path.getsize(fp32)
    graph = onnx.load(int8)
    ops = [node.op_type for node in graph.graph.node]
    convs = sum(op == "Conv" for op in ops)
    assert convs > 20 and ops.count("DequantizeLinear") >= 2 * convs  # each conv's input and weight
    assert "NonMaxSuppression" in ops  # the post-processing is there, in float32
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert metadata["fcos_precision"] == "int8" and json.loads(metadata["categories"])[0] == "__background"
    assert metadata["fcos_calibration"].startswith("6 images of DATASETS.TRAIN")
    session = ort.InferenceSession(int8, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_top_detection_matches_float32_on_a_confident_scene(trained, backend):
    cfg, model, _, int8, fp32 = trained
    image, box = _scene(1000)  # not seen in training or calibration
    runner = RUNNERS[backend]
    expected, got = _detect(runner(fp32), image, cfg), _detect(runner(int8), image, cfg)
    scores = expected.get_field("scores")
    assert scores[0] > 0.5 and scores[0] - scores[1] > 0.1  # the model is confident
    truth = BoxList(torch.tensor([box], dtype=torch.float32), expected.size)
    assert boxlist_iou(expected[[0]], truth).item() > 0.6  # and roughly right (80 steps of training)
    assert got.get_field("labels")[0] == expected.get_field("labels")[0] == LABEL
    assert boxlist_iou(got[[0]], expected[[0]]).item() > 0.9
    assert abs(got.get_field("scores")[0] - scores[0]) < 0.1
    assert len(got) > 0 and (got.get_field("scores")[:-1] >= got.get_field("scores")[1:]).all()


def test_test_onnx_precision_runs_the_int8_file_and_names_a_missing_one(trained, tmp_path):
    cfg, _, weights, int8, _ = trained
    runner = make_backend_runner(load_config(CONFIG, _opts(cfg) + ["TEST.ONNX_PRECISION", "int8"]), weights)
    assert isinstance(runner, OnnxRuntimeRunner) and runner.path == int8
    stat = os.stat(int8)
    try:  # an int8 file older than the weights is refused, not used or remade silently
        os.utime(int8, (stat.st_atime, os.path.getmtime(weights) - 100))
        with pytest.raises(ValueError, match="does not fit: it is older than the weight file"):
            make_backend_runner(load_config(CONFIG, _opts(cfg) + ["TEST.ONNX_PRECISION", "int8"]), weights)
    finally:
        os.utime(int8, (stat.st_atime, stat.st_mtime))
    other = _opts(cfg) + ["TEST.ONNX_PRECISION", "int8", "TEST.ONNX_CACHE_DIR", str(tmp_path)]
    with pytest.raises(FileNotFoundError, match=r"no int8 model at .*\.int8\.onnx; make it with tools/quantize_onnx.py"):
        make_backend_runner(load_config(CONFIG, other), weights)
    with pytest.raises(ValueError, match="TEST.ONNX_PRECISION 'int4': expected 'fp32' or 'int8'"):
        make_backend_runner(load_config(CONFIG, _opts(cfg) + ["TEST.ONNX_PRECISION", "int4"]), weights)


def _opts(cfg):
    return TINY + ["INPUT.MIN_SIZE_TEST", str(SIZE[0]), "INPUT.MAX_SIZE_TEST", str(SIZE[1]), "MODEL.WEIGHT",
                   cfg.MODEL.WEIGHT, "DATASETS.TRAIN", "('{}',)".format(cfg.DATASETS.TRAIN[0]),
                   "TEST.ONNX_CACHE_DIR", cfg.TEST.ONNX_CACHE_DIR, "TEST.BACKEND", "onnxruntime"]


def test_command_writes_the_int8_file_and_prints_its_size_against_fp32(trained, tmp_path):
    cfg, _, _, _, fp32 = trained
    out = tmp_path / "shipped" / "model.int8.onnx"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "quantize_onnx.py"), "--config-file", CONFIG,
                          "--calib-images", "2", "--output", str(out), *_opts(cfg)],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "calibration: 2/2 images" in res.stderr and "Using the cached ONNX export" in res.stderr
    assert "wrote {}".format(out) in res.stdout and "float32 export {}".format(fp32) in res.stdout
    assert "x smaller" in res.stdout and os.path.getsize(out) < os.path.getsize(fp32)
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["fcos_calibration"].startswith("2 images")


def test_calibration_set_without_a_readable_image_is_an_error_naming_it(trained, tmp_path):
    cfg, _, weights, _, _ = trained
    broken = _write_dataset(tmp_path / "broken", range(3), broken=True)
    bad = load_config(CONFIG, _opts(cfg) + ["DATASETS.TRAIN", "('{}',)".format(broken)])
    dataset, name = make_calibration_dataset(bad)
    assert broken in name
    reader = ImageCalibrationReader(dataset, 10, name)
    with pytest.raises(ValueError, match=r"calibration dataset DATASETS\.TRAIN .*broken.*: none of its 3 images"):
        reader.get_next()
    out = tmp_path / "never.int8.onnx"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "quantize_onnx.py"), "--config-file", CONFIG,
                          "--calib-images", "3", "--output", str(out), *_opts(bad)],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert res.returncode != 0 and "none of its 3 images tried could be read" in res.stderr
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # nothing half-written
