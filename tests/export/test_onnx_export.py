"""ONNX export: onnxruntime on the CPU gives the PyTorch detections.

A tiny FCOS (quickstart config, 64 FPN channels, one tower conv) is trained for 30 iterations on a
generated 8-image shapes set, exported with ``tools/export_onnx.py`` and run on the validation
images, whose sizes differ (dynamic H and W).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fcos_core.config import load_config
from fcos_core.data.build import make_data_loader
from fcos_core.export.onnx import export_onnx, legacy_class_nms
from fcos_core.layers import ml_nms
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils.checkpoint import DetectronCheckpointer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "quickstart" / "fcos_shapes.yaml")
TINY = [
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "1",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "224",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "224",
    "DATALOADER.NUM_WORKERS", "0",
]


def _run(script, args, env):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    res = subprocess.run([sys.executable, str(ROOT / "tools" / script), *args], cwd=str(ROOT), env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, PyTorch model, validation dataset, folder) of a tiny model trained for 30 iterations."""
    tmp = tmp_path_factory.mktemp("onnx")
    env = {"FCOS_DATA_DIR": str(tmp / "data"), "FCOS_SHAPES_NUM_IMAGES": "8"}
    _run("train_net.py", ["--config-file", CONFIG, "--skip-test", *TINY, "SOLVER.IMS_PER_BATCH", "2",
                          "SOLVER.WARMUP_ITERS", "5", "SOLVER.MAX_ITER", "30", "SOLVER.CHECKPOINT_PERIOD", "1000",
                          "OUTPUT_DIR", str(tmp / "train")], env)
    weights = str(tmp / "train" / "model_final.pth")
    cfg = load_config(CONFIG, TINY + ["MODEL.WEIGHT", weights])
    model = build_detection_model(cfg).eval()
    DetectronCheckpointer(cfg, model).load(weights, use_latest=False)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        dataset = make_data_loader(cfg, is_train=False)[0].dataset
    return cfg, model, dataset, tmp, env


def _export(trained, *extra):
    cfg, _, _, tmp, env = trained
    out = tmp / ("model{}.onnx".format("_raw" if extra else ""))
    res = _run("export_onnx.py", ["--config-file", CONFIG, "--output", str(out), *extra, *TINY,
                                  "MODEL.WEIGHT", cfg.MODEL.WEIGHT], env)
    assert str(out) in res.stdout
    onnx.checker.check_model(str(out))
    return ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]), onnx.load(str(out))


def _sorted(boxes, scores, labels):
    order = np.lexsort((boxes[:, 1], boxes[:, 0], labels, -scores))
    return boxes[order], scores[order], labels[order]


def _compare_on_dataset(model, session, dataset):
    """Assert ONNX == PyTorch detections on every image; returns the detection counts and image sizes."""
    counts, sizes = [], set()
    for i in range(len(dataset)):
        image = dataset[i][0][None]
        sizes.add(tuple(image.shape[-2:]))
        with torch.no_grad():
            expected = model(image)[0]
        boxes, scores, labels = session.run(None, {"image": image.numpy()})
        assert (scores[:-1] >= scores[1:]).all(), "highest score first"
        assert labels.dtype == np.int64 and len(boxes) == len(expected)
        ref = _sorted(expected.bbox.numpy(), expected.get_field("scores").numpy(),
                      expected.get_field("labels").numpy())
        got = _sorted(boxes, scores, labels)
        np.testing.assert_array_equal(got[2], ref[2])
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-3)
        np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-4)
        counts.append(len(boxes))
    return counts, sizes


def test_onnxruntime_detections_equal_pytorch_on_validation_images(trained):
    cfg, model, dataset, _, _ = trained
    session, graph = _export(trained)
    assert "NonMaxSuppression" in {node.op_type for node in graph.graph.node}
    counts, sizes = _compare_on_dataset(model, session, dataset)
    assert min(counts) > 0 and len(sizes) > 1  # detections, on images of several sizes (dynamic H, W)
    assert max(counts) == cfg.TEST.DETECTIONS_PER_IMG  # the DETECTIONS_PER_IMG cut was exercised


@pytest.mark.parametrize("threshold", [0.2, 0.99])
def test_onnxruntime_parity_below_the_detection_cap_and_with_none(trained, tmp_path, threshold):
    """A higher INFERENCE_TH: fewer candidates than PRE_NMS_TOP_N, fewer detections than the cap, or none."""
    cfg, trained_model, dataset, _, _ = trained
    cfg = load_config(CONFIG, TINY + ["MODEL.FCOS.INFERENCE_TH", str(threshold)])
    model = build_detection_model(cfg).eval()
    model.load_state_dict(trained_model.state_dict())
    export_onnx(model, str(tmp_path / "m.onnx"))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    counts, _ = _compare_on_dataset(model, session, dataset)
    if threshold < 0.5:
        assert 0 < sum(counts) and max(counts) < cfg.TEST.DETECTIONS_PER_IMG, counts
    else:
        assert sum(counts) == 0


def test_no_postprocess_exports_the_raw_head_outputs(trained):
    _, model, dataset, _, _ = trained
    session, _ = _export(trained, "--no-postprocess")
    names = [o.name for o in session.get_outputs()]
    assert names == [f"{n}_{l}" for n in ("cls_logits", "bbox_reg", "centerness") for l in range(5)]
    image = dataset[0][0][None]
    with torch.no_grad():
        padded = torch.nn.functional.pad(image, [0, (-image.shape[3]) % 32, 0, (-image.shape[2]) % 32])
        cls, reg, ctr = model.rpn.head(model.backbone(padded))
    outputs = session.run(None, {"image": image.numpy()})
    for got, want in zip(outputs, cls + reg + ctr):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


class _NMS(torch.nn.Module):
    def forward(self, boxes, scores, labels):
        return legacy_class_nms(boxes, scores, labels, 3, 0.5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_exported_nms_reproduces_the_legacy_plus_one_iou(tmp_path):
    """Small integer boxes, where +1 in widths changes many decisions: ONNX == ml_nms(legacy=True)."""
    gen = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 12, (300, 2), generator=gen).float()
    boxes = torch.cat((xy, xy + torch.randint(0, 5, (300, 2), generator=gen)), dim=1)
    scores = torch.rand(300, generator=gen) + 0.01
    labels = torch.randint(1, 4, (300,), generator=gen)
    path = tmp_path / "nms.onnx"
    torch.onnx.export(_NMS(), (boxes, scores, labels), str(path), dynamo=False, opset_version=17,
                      input_names=["boxes", "scores", "labels"], dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"},
                                                                               "labels": {0: "n"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = set(session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()})[0])
    legacy = set(ml_nms(boxes, scores, labels, 0.5, legacy=True).tolist())
    plain = set(ml_nms(boxes, scores, labels, 0.5, legacy=False).tolist())
    assert got == legacy
    assert plain != legacy  # the data does tell the two conventions apart
