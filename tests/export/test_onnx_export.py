"""ONNX export: onnxruntime on the CPU gives the PyTorch detections.

A tiny FCOS (quickstart config, 64 FPN channels, one tower conv) is trained for 30 iterations on a
generated 8-image shapes set, exported with ``tools/export_onnx.py`` and run on the validation
images, whose sizes differ (dynamic H and W). The same tiny network in MODEL.FCOS.CONVENTION
"torchvision", with random weights, is compared on images of sizes chosen for the padded size.
"""
import copy
import json
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
from fcos_core.export.onnx import (
    export_checkpoint, export_onnx, make_export_postprocessor, read_categories,
)
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
                         capture_output=True, text=True, timeout=1200)  # slow on a shared, busy machine
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


def _assert_same_detections(got, expected, box_tol=1e-3, score_tol=1e-4):
    """Every detection (boxes [K, 4], scores [K], labels [K]) of ``got`` pairs off with one of
    ``expected``: same label, boxes within ``box_tol`` pixels, scores within ``score_tol``.

    Matched one to one rather than position by position, so that two detections whose scores are
    closer than the numerical noise may come in either order.
    """
    boxes, scores, labels = got
    ref_boxes, ref_scores, ref_labels = expected
    assert len(boxes) == len(ref_boxes)
    fits = ((labels[:, None] == ref_labels[None, :])
            & (np.abs(boxes[:, None, :] - ref_boxes[None, :, :]).max(axis=2) <= box_tol)
            & (np.abs(scores[:, None] - ref_scores[None, :]) <= score_tol))
    used = np.zeros(len(ref_boxes), dtype=bool)
    for i in range(len(boxes)):
        candidates = np.flatnonzero(fits[i] & ~used)
        assert len(candidates), f"detection {i} (label {labels[i]}, score {scores[i]}, box {boxes[i]}) has no match"
        used[candidates[0]] = True


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
        _assert_same_detections((boxes, scores, labels), (expected.bbox.numpy(), expected.get_field("scores").numpy(),
                                                          expected.get_field("labels").numpy()))
        counts.append(len(boxes))
    return counts, sizes


def test_onnxruntime_detections_equal_pytorch_on_validation_images(trained):
    cfg, model, dataset, _, _ = trained
    session, graph = _export(trained)
    assert "NonMaxSuppression" in {node.op_type for node in graph.graph.node}
    counts, sizes = _compare_on_dataset(model, session, dataset)
    assert min(counts) > 0 and len(sizes) > 1  # detections, on images of several sizes (dynamic H, W)
    assert max(counts) == cfg.TEST.DETECTIONS_PER_IMG  # the DETECTIONS_PER_IMG cut was exercised
    # the class names the training saved in the checkpoint travel in the metadata
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(metadata["categories"]) == list(dataset.class_names)


def test_export_takes_the_class_count_from_the_checkpoint_and_names_from_a_json(trained, tmp_path):
    cfg, _, dataset, _, _ = trained
    cats = tmp_path / "instances.json"
    names = [f"kind {i}" for i in range(1, len(dataset.class_names))]
    cats.write_text(json.dumps({"categories": [{"id": 10 * (i + 1), "name": n} for i, n in enumerate(names)]}))
    auto = load_config(CONFIG, TINY + ["MODEL.WEIGHT", cfg.MODEL.WEIGHT, "MODEL.FCOS.NUM_CLASSES", "0"])
    out = tmp_path / "named.onnx"
    _, _, categories = export_checkpoint(auto, str(out), categories_from=str(cats))
    assert categories == ["__background"] + names and read_categories(str(out)) == categories
    wrong = tmp_path / "two.json"
    wrong.write_text(json.dumps({"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    with pytest.raises(ValueError, match="two.json name 2 classes but the model has 6"):
        export_checkpoint(auto, str(tmp_path / "x.onnx"), categories_from=str(wrong))


@pytest.mark.parametrize("threshold,nms", [(0.2, 0.6), (0.99, 0.6), (0.3, 0.0)])
def test_onnxruntime_parity_below_the_detection_cap_and_with_none(trained, tmp_path, threshold, nms):
    """A higher INFERENCE_TH: fewer candidates than PRE_NMS_TOP_N, fewer detections than the cap, or
    none; NMS_TH 0 turns the NMS off."""
    cfg, trained_model, dataset, _, _ = trained
    cfg = load_config(CONFIG, TINY + ["MODEL.FCOS.INFERENCE_TH", str(threshold), "MODEL.FCOS.NMS_TH", str(nms)])
    model = build_detection_model(cfg).eval()
    model.load_state_dict(trained_model.state_dict())
    export_onnx(model, str(tmp_path / "m.onnx"), make_export_postprocessor(cfg))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    counts, _ = _compare_on_dataset(model, session, dataset)
    if threshold < 0.5:
        assert 0 < sum(counts) and max(counts) < cfg.TEST.DETECTIONS_PER_IMG, counts
    else:
        assert sum(counts) == 0


TORCHVISION_TINY = TINY + ["MODEL.FCOS.CONVENTION", "torchvision", "INPUT.RESIZE_STYLE", "torchvision",
                           "MODEL.FCOS.PRE_NMS_TOP_N", "300"]


@pytest.mark.parametrize("threshold", [0.2, 0.58])
def test_onnxruntime_detections_equal_pytorch_in_the_torchvision_convention(tmp_path, threshold):
    """MODEL.FCOS.CONVENTION "torchvision" (configs/torchvision/): locations at torchvision's anchor
    centres, strides from the padded size computed in the graph; candidates sqrt(cls * ctr) >
    INFERENCE_TH ranked by it; boxes clipped to [0, W] x [0, H]; continuous-IoU NMS; exactly
    DETECTIONS_PER_IMG (threshold 0.2: more survive the NMS) or fewer (0.58, where a threshold on the
    class probability alone would let more through).

    One graph on three sizes: padded 128 x 192 (P7 anchor strides 128 x 96) and 224 x 320 (P6 56 x 64,
    P7 112 x 106), which are not multiples of 128, and 256 x 384, which is. Random weights, class
    biases raised so that hundreds of pairs pass the threshold and the NMS and the cut do work, box
    biases so that boxes have sizes (up to 3 strides a side) and reach past the borders.
    """
    cfg = load_config(CONFIG, TORCHVISION_TINY + ["MODEL.FCOS.INFERENCE_TH", str(threshold)])
    torch.manual_seed(0)
    model = build_detection_model(cfg).eval()
    with torch.no_grad():
        model.rpn.head.cls_logits.bias.normal_(-1.0, 1.0)
        model.rpn.head.bbox_pred.bias.uniform_(0.5, 3.0)
    postprocessor = make_export_postprocessor(cfg)
    assert postprocessor.convention == "torchvision"
    path = str(tmp_path / "torchvision_convention.onnx")
    export_onnx(model, path, postprocessor)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    uncut = make_export_postprocessor(load_config(CONFIG, TORCHVISION_TINY + ["TEST.DETECTIONS_PER_IMG", "0"]))
    gen = torch.Generator().manual_seed(1)
    for h, w in ((128, 170), (200, 300), (256, 384)):
        image = torch.randn(1, 3, h, w, generator=gen)
        with torch.no_grad():
            expected = model(image)[0]
            head = model.rpn.head(model.backbone(_pad32(image)))
        boxes, scores, labels = session.run(None, {"image": image.numpy()})
        _assert_same_detections((boxes, scores, labels), (expected.bbox.numpy(), expected.get_field("scores").numpy(),
                                                          expected.get_field("labels").numpy()))
        assert (scores[:-1] >= scores[1:]).all(), "highest score first"
        if threshold < 0.5:
            assert boxes[:, 2].max() == w and boxes[:, 3].max() == h  # clipped to W and H, not W - 1, H - 1
            assert len(boxes) == cfg.TEST.DETECTIONS_PER_IMG
            with torch.no_grad():
                assert len(uncut(*head, (h, w), _pad32(image).shape[-2:])[0]) > len(boxes)
        else:
            assert 0 < len(boxes) < cfg.TEST.DETECTIONS_PER_IMG


def test_no_postprocess_exports_the_raw_head_outputs(trained):
    _, model, dataset, _, _ = trained
    session, _ = _export(trained, "--no-postprocess")
    names = [o.name for o in session.get_outputs()]
    assert names == [f"{n}_{l}" for n in ("cls_logits", "bbox_reg", "centerness") for l in range(5)]
    image = dataset[0][0][None]
    with torch.no_grad():
        cls, reg, ctr = model.rpn.head(model.backbone(_pad32(image)))
    outputs = session.run(None, {"image": image.numpy()})
    for got, want in zip(outputs, cls + reg + ctr):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_deformable_convolutions_export_as_deform_conv(trained, tmp_path):
    """DCN v2 in the backbone and the towers (the dcnv2 configs) -> ONNX DeformConv, opset 19.

    Compared on the head outputs against a float64 run of the same model: this random backbone has
    features up to ~500, so float32 noise grows to ~1e-3 in the outputs (one deformable layer
    alone agrees to 1e-5); onnxruntime must be as close to float64 as float32 PyTorch is (within
    2x of PyTorch's worst output on the image: per output, the two fall either way by up to 3x).
    Detections are not compared: with random weights they hold many near-equal scores and overlaps
    near NMS_TH, where that noise flips decisions. The post-processing graph is tested above.
    """
    _, _, dataset, _, _ = trained
    cfg = load_config(CONFIG, TINY + ["MODEL.FCOS.USE_DCN_IN_TOWER", "True", "MODEL.RESNETS.WITH_MODULATED_DCN",
                                      "True", "MODEL.RESNETS.STAGE_WITH_DCN", "(False, False, True, True)"])
    torch.manual_seed(0)
    model = build_detection_model(cfg).eval()
    with torch.no_grad():  # offsets start at zero: make them matter
        for module in model.modules():
            if isinstance(getattr(module, "offset", None), torch.nn.Conv2d):
                module.offset.weight.normal_(0, 0.05)
                module.offset.bias.normal_(0, 1.0)
    path = str(tmp_path / "dcn.onnx")
    assert export_onnx(model, path)[1] == 19  # no post-processor: the raw head outputs
    assert "DeformConv" in {node.op_type for node in onnx.load(path).graph.node}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    model64 = copy.deepcopy(model).double()
    for i in (0, 1):
        image = dataset[i][0][None]
        with torch.no_grad():
            cls, reg, ctr = model.rpn.head(model.backbone(_pad32(image)))
            exact = sum(model64.rpn.head(model64.backbone(_pad32(image).double())), [])
            cls_zero_offsets = _without_offsets(model, image)
        outputs = session.run(None, {"image": image.numpy()})
        # float32 noise differs from output to output and from CPU to CPU (which kernels run): bound
        # each ONNX output's error by float32 PyTorch's worst error over this image's outputs
        torch_error = max(np.abs(want.numpy() - ref.numpy()).max() for want, ref in zip(cls + reg + ctr, exact))
        for got, ref in zip(outputs, exact):
            onnx_error = np.abs(got - ref.numpy()).max()
            assert onnx_error <= 2 * torch_error + 1e-5, (onnx_error, torch_error)
        assert np.abs(outputs[0] - cls_zero_offsets.numpy()).max() > 1e-2  # the offsets did matter
    with pytest.raises(ValueError, match="opset 19"):
        export_onnx(model, path, opset=17)


def _pad32(image):
    return torch.nn.functional.pad(image, [0, (-image.shape[3]) % 32, 0, (-image.shape[2]) % 32])


def _without_offsets(model, image):
    """The first level's class logits with every deformable offset zeroed (weights restored after)."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    for module in model.modules():
        if isinstance(getattr(module, "offset", None), torch.nn.Conv2d):
            module.offset.weight.zero_()
            module.offset.bias.zero_()
    cls = model.rpn.head(model.backbone(_pad32(image)))[0][0]
    model.load_state_dict(saved)
    return cls


