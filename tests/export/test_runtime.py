"""TEST.BACKEND (fcos_core/export/runtime.py): onnxruntime and OpenVINO running the cached ONNX export
give the PyTorch detections (the export parity tolerances: boxes within 1e-3 px, scores within 1e-4)
through inference on the shapes set and through COCODemo; the export cache is reused, and refreshed
when the weights or the config change; a missing runtime or an op it cannot run is one clear error.

The model is the tiny quickstart network of tests/export/test_onnx_export.py (64 FPN channels, one
tower conv, 128-pixel test images) with random weights and raised class biases, so that there are
plenty of detections without training; the same file exported by tools/export_onnx.py is checked
against a trained model in tests/export/test_onnx_export.py. openvino and onnxruntime come with the "dev" extra.
"""
import os
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import helper

import fcos_core.export.onnx as export_onnx_module
from fcos_core.config import load_config
from fcos_core.data.build import make_data_loader
from fcos_core.engine.defaults import make_test_runner, run_test
from fcos_core.engine.inference import compute_on_dataset
from fcos_core.engine.predictor import COCODemo
from fcos_core.export import runtime
from fcos_core.modeling.detector import build_detection_model

from test_onnx_export import CONFIG, TINY, _assert_same_detections  # noqa: I100  (a sibling test module)

BACKENDS = ("onnxruntime", "openvino")


def _save_random_model(path, seed=0):
    torch.manual_seed(seed)
    cfg = load_config(CONFIG, TINY)
    model = build_detection_model(cfg).eval()
    torch.nn.init.normal_(model.rpn.head.cls_logits.bias, mean=-1.0, std=1.0)  # detections without training
    torch.save({"model": model.state_dict()}, path)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(weights path, PyTorch model, env, cache folder) of a random tiny model."""
    tmp = tmp_path_factory.mktemp("runtime")
    weights = str(tmp / "model.pth")
    model = _save_random_model(weights)
    env = {"FCOS_DATA_DIR": str(tmp / "data"), "FCOS_SHAPES_NUM_IMAGES": "8"}
    return weights, model, env, str(tmp / "cache")


def _cfg(tiny, backend, *extra):
    weights, _, _, cache = tiny
    return load_config(CONFIG, TINY + ["MODEL.WEIGHT", weights, "TEST.BACKEND", backend, "TEST.ONNX_CACHE_DIR", cache,
                                       "TEST.IMS_PER_BATCH", "4", *extra])


def _as_numpy(boxlist):
    return boxlist.bbox.numpy(), boxlist.get_field("scores").numpy(), boxlist.get_field("labels").numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_detections_equal_pytorch_on_the_shapes_set(tiny, backend, monkeypatch):
    _, model, env, _ = tiny
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = _cfg(tiny, backend)
    runner = make_test_runner(cfg)
    assert isinstance(runner, runtime.RUNNERS[backend])
    # the runtimes take batches of 4 padded images of several sizes, and run them one by one, as
    # PyTorch does in batches of 1 (in a batch, a smaller image's features near its bottom and right
    # edges see the padding up to the largest image, so the detections there differ a little)
    got = compute_on_dataset(model, make_data_loader(cfg, is_train=False)[0], "cpu", runner=runner)
    single = make_data_loader(_cfg(tiny, "pytorch", "TEST.IMS_PER_BATCH", "1"), is_train=False)[0]
    expected = compute_on_dataset(model, single, "cpu", fuse_bn=True)
    assert sorted(got) == sorted(expected) == list(range(8))
    sizes = set()
    for i in expected:
        assert got[i].size == expected[i].size and got[i].mode == "xyxy"
        assert got[i].get_field("labels").dtype == torch.int64
        _assert_same_detections(_as_numpy(got[i]), _as_numpy(expected[i]))
        sizes.add(expected[i].size)
    assert len(sizes) > 1 and min(len(r) for r in expected.values()) > 0


def test_run_test_with_a_backend_evaluates_the_latest_checkpoint_as_pytorch_does(tiny, tmp_path, monkeypatch):
    """tools/test_net.py's path: MODEL.WEIGHT "" takes OUTPUT_DIR's latest checkpoint; the COCO
    evaluation of the onnxruntime detections equals PyTorch's (batches of 1)."""
    weights, model, env, _ = tiny
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "last_checkpoint").write_text(weights)
    results = {}
    for backend in ("pytorch", "onnxruntime"):
        cfg = _cfg(tiny, backend, "MODEL.WEIGHT", "", "OUTPUT_DIR", str(tmp_path), "TEST.IMS_PER_BATCH", "1",
                   "DATASETS.TEST", "('shapes_val',)")
        runner = make_test_runner(cfg)
        assert (runner is None) == (backend == "pytorch")
        (results[backend], detections), = run_test(cfg, model, False, runner=runner)
        assert len(detections["bbox"]) > 8  # COCO-format detections of the 8 images
    for name, value in results["pytorch"].results["bbox"].items():
        assert abs(results["onnxruntime"].results["bbox"][name] - value) < 1e-3, name


@pytest.mark.parametrize("backend,convention", [(b, "original") for b in BACKENDS] + [("openvino", "torchvision")])
def test_coco_demo_backend_equals_pytorch(tiny, backend, convention):
    image = np.random.RandomState(0).randint(0, 256, (150, 230, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 0)
    reference = COCODemo(_cfg(tiny, "pytorch", "MODEL.FCOS.CONVENTION", convention), min_image_size=128)
    demo = COCODemo(_cfg(tiny, backend, "MODEL.FCOS.CONVENTION", convention), min_image_size=128)
    assert reference.runner is None and isinstance(demo.runner, runtime.RUNNERS[backend])
    expected, got = reference.compute_prediction(image), demo.compute_prediction(image)
    assert got.size == expected.size == (230, 150) and len(expected) > 0  # resized back to the image
    _assert_same_detections(_as_numpy(got), _as_numpy(expected))
    assert demo.run_on_opencv_image(image).shape == image.shape


def _count_exports(monkeypatch):
    calls = []
    real = export_onnx_module.export_checkpoint

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(export_onnx_module, "export_checkpoint", counting)
    return calls


def test_cache_is_reused_and_refreshed_when_weights_or_config_change(tmp_path, monkeypatch, caplog):
    weights = str(tmp_path / "w.pth")
    _save_random_model(weights)
    cfg = load_config(CONFIG, TINY + ["TEST.ONNX_CACHE_DIR", str(tmp_path / "cache")])
    calls = _count_exports(monkeypatch)
    first = runtime.cached_export(cfg, weights)
    mtime = os.path.getmtime(first)
    assert runtime.cached_export(cfg, weights) == first and len(calls) == 1  # reused
    assert os.path.getmtime(first) == mtime and os.listdir(tmp_path / "cache") == [os.path.basename(first)]
    # same weights written again, later: the export is older than its weights, so exported again
    os.utime(weights, (mtime + 10, mtime + 10))
    assert runtime.cached_export(cfg, weights) == first and len(calls) == 2
    assert "older than the weight file" in caplog.text
    # other weights and another config: other keys, new exports
    _save_random_model(weights, seed=1)
    second = runtime.cached_export(cfg, weights)
    other_cfg = load_config(CONFIG, TINY + ["TEST.DETECTIONS_PER_IMG", "50"])
    third = runtime.cached_export(other_cfg, weights, cache_dir=str(tmp_path / "cache"))
    assert len({first, second, third}) == 3 and len(calls) == 4
    # a file for another config or class count under this key's name is never used
    os.replace(third, second)
    caplog.clear()
    assert runtime.cached_export(cfg, weights) == second and len(calls) == 5
    assert "exported for another config" in caplog.text
    metadata = {p.key: p.value for p in onnx.load(second).metadata_props}
    assert metadata[runtime.KEY] in os.path.basename(second)


def test_a_cached_export_for_another_class_count_is_exported_again(tmp_path, monkeypatch, caplog):
    weights = str(tmp_path / "w.pth")
    _save_random_model(weights)
    cfg = load_config(CONFIG, TINY + ["TEST.ONNX_CACHE_DIR", str(tmp_path / "cache")])
    calls = _count_exports(monkeypatch)
    path = runtime.cached_export(cfg, weights)
    assert len(export_onnx_module.read_categories(path)) == cfg.MODEL.FCOS.NUM_CLASSES == 7
    export_onnx_module.write_metadata(path, {"categories": '["__background", "a"]'})
    assert runtime.cached_export(cfg, weights) == path and len(calls) == 2
    assert "it names 2 classes, background included; the config has 7" in caplog.text
    assert len(export_onnx_module.read_categories(path)) == 7
    with open(path, "wb") as f:  # a truncated file: exported again too
        f.write(b"\xff\xff\xff")
    assert runtime.cached_export(cfg, weights) == path and len(calls) == 3
    assert "not a readable ONNX file" in caplog.text and onnx.load(path).graph.node


def test_an_unwritable_cache_folder_is_named(tmp_path):
    weights = str(tmp_path / "w.pth")
    _save_random_model(weights)
    (tmp_path / "file").write_text("")
    cfg = load_config(CONFIG, TINY + ["TEST.ONNX_CACHE_DIR", str(tmp_path / "file" / "cache")])
    with pytest.raises(OSError, match="TEST.ONNX_CACHE_DIR .*file/cache: cannot write the ONNX export there"):
        runtime.cached_export(cfg, weights)


@pytest.mark.parametrize("backend,extra", [("openvino", "openvino"), ("onnxruntime", "export")])
def test_missing_backend_is_one_line_naming_the_extra(tiny, backend, extra, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, backend, None)  # import fails as if not installed
    with pytest.raises(ImportError) as info:
        runtime.make_backend_runner(_cfg(tiny, backend), tiny[0])
    message = str(info.value)
    assert "\n" not in message and f'pip install "fcos_core[{extra}]"' in message and backend in message
    from fcos_core.cli import main

    with pytest.raises(SystemExit):
        main([str(tmp_image(tiny)), "--config-file", CONFIG, "--weights", tiny[0], "--backend", backend, *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'fcos: error: TEST.BACKEND {backend!r} needs the {backend} package: pip install "fcos_core[{extra}]"']


def tmp_image(tiny):
    path = os.path.join(os.path.dirname(tiny[0]), "image.png")
    cv2.imwrite(path, np.full((64, 80, 3), 127, np.uint8))
    return path


def test_pytorch_only_options_and_unknown_backends_are_errors(tiny):
    with pytest.raises(ValueError, match="TEST.AMP and TEST.BBOX_AUG.ENABLED need TEST.BACKEND 'pytorch'"):
        runtime.make_backend_runner(_cfg(tiny, "onnxruntime", "TEST.AMP", "True"), tiny[0])
    with pytest.raises(ValueError, match="TEST.BACKEND 'tensorrt': expected one of pytorch, onnxruntime, openvino"):
        runtime.make_backend_runner(_cfg(tiny, "tensorrt"), tiny[0])
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHT '' is not a file"):
        runtime.make_backend_runner(_cfg(tiny, "onnxruntime"), "")


@pytest.mark.parametrize("runner", [runtime.OnnxRuntimeRunner, runtime.OpenVinoRunner])
def test_an_op_the_runtime_cannot_run_is_named(tmp_path, runner):
    node = helper.make_node("Relu", ["image"], ["relu"])
    odd = helper.make_node("FancyUnheardOfOp", ["relu"], ["boxes"], domain="com.example")
    graph = helper.make_graph([node, odd], "g", [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, None)])
    path = str(tmp_path / "odd.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.example", 1)]), path)
    with pytest.raises(runtime.BackendOpError, match=r"cannot run op FancyUnheardOfOp of .*odd\.onnx"):
        runner(path)
