"""OpenVINO's bf16 precision hint on the float32 export (OpenVinoRunner(precision="bf16"),
TEST.ONNX_PRECISION "bf16"): its errors, and on a CPU with native bfloat16 the same top detection as
float32 for the confident tiny model of tests/export/test_quantize.py (trained there by ``_train``).

Tolerance: bfloat16 keeps 8 bits of mantissa, so the head outputs move by well under a percent of
their range; on a confident model (top score ~0.6, 0.1 above the next) that keeps the top label and
its box within IoU 0.9 of float32's, and its score within 0.05.
"""
import pytest
import torch

import fcos_core.utils.env as fcos_env
from fcos_core.config import load_config
from fcos_core.export import runtime
from fcos_core.structures.boxlist_ops import boxlist_iou

from test_onnx_export import CONFIG, TINY  # noqa: I100  (sibling test modules)
from test_quantize import LABEL, SIZE, _detect, _scene, _train

NATIVE = fcos_env.cpu_has_fast_bf16()


def _opts(weights, cache, backend, precision):
    return TINY + ["INPUT.MIN_SIZE_TEST", str(SIZE[0]), "INPUT.MAX_SIZE_TEST", str(SIZE[1]), "MODEL.WEIGHT", weights,
                   "TEST.ONNX_CACHE_DIR", cache, "TEST.BACKEND", backend, "TEST.ONNX_PRECISION", precision]


@pytest.fixture(scope="module")
def confident(tmp_path_factory):
    """(weights path, cache folder) of the tiny detector fitted on synthetic scenes."""
    tmp = tmp_path_factory.mktemp("bf16")
    model = _train(load_config(CONFIG, TINY + ["INPUT.MIN_SIZE_TEST", str(SIZE[0]), "INPUT.MAX_SIZE_TEST", str(SIZE[1])]))
    weights = str(tmp / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    return weights, str(tmp / "cache")


def test_bf16_top_detection_matches_float32(confident):
    weights, cache = confident
    cfg = load_config(CONFIG, _opts(weights, cache, "openvino", "bf16"))
    if not NATIVE:  # this CPU cannot run it: the key says so instead of running float32
        with pytest.raises(ValueError, match="avx512_bf16 or amx_bf16"):
            runtime.make_backend_runner(cfg, weights)
        return
    runner = runtime.make_backend_runner(cfg, weights)
    assert isinstance(runner, runtime.OpenVinoRunner) and runner.precision == "bf16"
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    fp32 = runtime.OpenVinoRunner(runner.path)  # the same (float32) file: bf16 is a runtime option
    assert fp32.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    image, _ = _scene(1000)  # not seen in training
    expected, got = _detect(fp32, image, cfg), _detect(runner, image, cfg)
    scores = expected.get_field("scores")
    assert scores[0] > 0.5 and scores[0] - scores[1] > 0.1  # the model is confident
    assert got.get_field("labels")[0] == expected.get_field("labels")[0] == LABEL
    assert boxlist_iou(got[[0]], expected[[0]]).item() > 0.9
    assert abs(got.get_field("scores")[0] - scores[0]) < 0.05
    assert not torch.equal(got.get_field("scores")[:5], scores[:5])  # bfloat16 did run: not bit-equal


def test_bf16_is_openvino_only(tmp_path):
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"x")  # the check comes before the export
    cfg = load_config(CONFIG, _opts(str(weights), str(tmp_path), "onnxruntime", "bf16"))
    with pytest.raises(ValueError, match="TEST.ONNX_PRECISION 'bf16' is OpenVINO-only.*TEST.BACKEND is 'onnxruntime'"):
        runtime.make_backend_runner(cfg, str(weights))
    cfg = load_config(CONFIG, _opts(str(weights), str(tmp_path), "openvino", "fp16"))
    with pytest.raises(ValueError, match=r"TEST.ONNX_PRECISION 'fp16': expected 'fp32' or 'int8' \(or 'bf16'"):
        runtime.make_backend_runner(cfg, str(weights))


def test_bf16_on_a_cpu_without_native_bfloat16_is_an_error(confident, monkeypatch):
    weights, cache = confident
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: False)
    cfg = load_config(CONFIG, _opts(weights, cache, "openvino", "bf16"))
    with pytest.raises(ValueError, match=r"TEST.ONNX_PRECISION 'bf16' needs a CPU with native bfloat16 "
                                         r"\(flag avx512_bf16 or amx_bf16 in /proc/cpuinfo\).*silently run float32"):
        runtime.make_backend_runner(cfg, weights)
    path = runtime.cached_export(load_config(CONFIG, _opts(weights, cache, "openvino", "fp32")), weights)
    with pytest.raises(ValueError, match="OpenVINO precision 'bf16' needs a CPU with native bfloat16"):
        runtime.OpenVinoRunner(path, precision="bf16")
    with pytest.raises(ValueError, match="OpenVINO precision 'f16': expected one of f32, bf16"):
        runtime.OpenVinoRunner(path, precision="f16")
    assert runtime.OpenVinoRunner(path).precision == "f32"  # float32 needs no flag
