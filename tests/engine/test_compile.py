"""TEST.COMPILE (fcos_core.engine.compile): the backbone and the FCOS head through torch.compile
(inductor, frozen weights, dynamic shapes) give the eager detections, in float32 and under bfloat16
autocast, for two image sizes from one compilation; the convolutions really are prepacked; the
model given to prepare_for_inference is left alone; the errors name TEST.COMPILE; TEST.WINOGRAD's
kernel compiles into the graph.

One compiled copy of the quickstart model (random weights) serves every test of this module: its
compilations (float32, then bfloat16 autocast) take most of this file's time (~1-2 minutes on one
thread with an empty inductor cache).
"""
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from fcos_core.config import load_config
from fcos_core.engine import inference as inference_module
from fcos_core.engine.compile import FrozenCompiled
from fcos_core.engine.defaults import make_test_runner
from fcos_core.engine.inference import (compute_on_dataset, forward_for_inference, make_inference_options,
                                        prepare_for_inference)
from fcos_core.modeling.detector import build_detection_model
from fcos_core.structures.boxlist_ops import boxlist_iou
from fcos_core.structures.image_list import to_image_list
from fcos_core.utils.env import cpu_has_fast_bf16

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart" / "fcos_shapes.yaml")
# One size family: ATen picks oneDNN or its own convolution by the input's size (20480 elements),
# which dynamo guards on, so each FPN level's input must be on the same side of it for both sizes
# (images much smaller than these compile once more)
SIZES = ((320, 416), (448, 608))


@pytest.fixture(scope="module")
def models():
    """(source model, its state dict as it was, eager inference copy, compiled inference copy)."""
    torch.manual_seed(0)
    cfg = load_config(QUICKSTART, ["MODEL.FCOS.INFERENCE_TH", "0.3", "TEST.COMPILE", "True"])
    model = build_detection_model(cfg).eval()
    nn.init.normal_(model.rpn.head.cls_logits.bias, std=1.0)  # plenty of detections to compare
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opts = make_inference_options(cfg, "cpu")
    eager = prepare_for_inference(model, opts.fuse_bn, opts.channels_last)
    compiled = prepare_for_inference(model, opts.fuse_bn, opts.channels_last, opts.compile)
    return model, before, eager, compiled


def _images(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=g) for h, w in SIZES]


def _detect(model, image, amp_dtype=None):
    with torch.no_grad():
        return forward_for_inference(model, [image], "cpu", amp_dtype, channels_last=True)[0]


def _assert_same_detections(expected, actual, box_tol, score_tol):
    """Same count; each expected detection has an actual one of its label with IoU > 1 - box_tol
    and a score within score_tol."""
    assert len(expected) > 20 and len(actual) == len(expected)
    iou = boxlist_iou(expected, actual)
    same = expected.get_field("labels")[:, None] == actual.get_field("labels")[None]
    best, j = torch.where(same, iou, torch.zeros_like(iou)).max(dim=1)
    assert (best > 1 - box_tol).all(), best.min()
    score_diff = (expected.get_field("scores") - actual.get_field("scores")[j]).abs()
    assert (score_diff < score_tol).all(), score_diff.max()


def _compiles():
    """How many graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compiled_float32_detections_equal_eager_at_two_sizes(models):
    """Two image sizes through one compilation (dynamic shapes: no second compile). float32
    tolerances: the prepacked convolutions sum in another order than eager oneDNN, so boxes agree
    to IoU > 0.999 and scores to 1e-4, labels exactly (measured on a Xeon: IoU >= 0.99996, scores
    within 4e-7)."""
    _, _, eager, compiled = models
    first, second = _images()
    _assert_same_detections(_detect(eager, first), _detect(compiled, first), 1e-3, 1e-4)
    graphs = _compiles()
    _assert_same_detections(_detect(eager, second), _detect(compiled, second), 1e-3, 1e-4)
    assert _compiles() == graphs, "the second image size compiled again"


def test_compiled_model_runs_prepacked_fused_convolutions(models):
    """Frozen weights: oneDNN's prepacked convolution with its fused post-op, no eager conv."""
    _, _, _, compiled = models
    image = _images()[0]
    _detect(compiled, image)  # compiled by the test above when run together; compiles here otherwise
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _detect(compiled, image)
    ops = {e.key for e in prof.key_averages()}
    assert "mkldnn::_convolution_pointwise" in ops, sorted(ops)
    assert not ops & {"aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::convolution"}, sorted(ops)


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bfloat16 autocast is emulated on this CPU (no AVX-512 BF16 "
                    "or AMX): TEST.AMP runs float32 there; the float32 test covers TEST.COMPILE")
def test_compiled_bfloat16_detections_match_eager_bfloat16(models):
    """Under bfloat16 autocast (TEST.AMP): inductor keeps the fused bias / ReLU / add in float32
    between bfloat16 convolutions where eager rounds each to bfloat16 (8 bits of mantissa, ~0.4%
    per rounding), so the comparison is that of two bfloat16 runs: the top 10 detections' boxes
    (IoU > 0.85) and scores (within 0.03), labels equal (measured on a Xeon with AMX: IoU >= 0.92,
    scores within 0.0014)."""
    _, _, eager, compiled = models
    for image in _images():
        expected = _detect(eager, image, torch.bfloat16)
        actual = _detect(compiled, image, torch.bfloat16)
        assert actual.bbox.dtype == torch.float32
        assert abs(len(actual) - len(expected)) <= max(2, len(expected) // 10)
        top = expected[expected.get_field("scores").argsort(descending=True)[:10]]
        iou = boxlist_iou(top, actual)
        same = top.get_field("labels")[:, None] == actual.get_field("labels")[None]
        best, j = torch.where(same, iou, torch.zeros_like(iou)).max(dim=1)
        assert (best > 0.85).all(), best
        assert ((top.get_field("scores") - actual.get_field("scores")[j]).abs() < 0.03).all()


def test_the_given_model_is_left_alone(models):
    model, before, _, compiled = models
    assert compiled is not model and type(model.backbone) is not FrozenCompiled
    assert isinstance(compiled.backbone, FrozenCompiled) and isinstance(compiled.rpn.head, FrozenCompiled)
    after = model.state_dict()
    assert list(after) == list(before)  # batch norms not folded into it
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_compute_on_dataset_compiles_its_folded_copy(models, monkeypatch):
    """compute_on_dataset(compile=True) (tools/test_net.py's path) compiles the folded channels_last
    copy in place (not the given model, not a second copy) and predicts with it; the fixture's
    compiled model stands in for the compilation to save its time."""
    model, _, _, compiled = models
    calls = []

    def fake_compile(m, device=None, in_place=False):
        calls.append((m, in_place))
        return compiled

    monkeypatch.setattr(inference_module, "compile_for_inference", fake_compile)
    loader = [(to_image_list([_images()[0]], 32), None, [0])]
    expected = compute_on_dataset(model, loader, "cpu", channels_last=True, fuse_bn=True)[0]
    actual = compute_on_dataset(model, loader, "cpu", channels_last=True, fuse_bn=True, compile=True)[0]
    (given, in_place), = calls
    assert given is not model and in_place and given.backbone.body.stem.conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    _assert_same_detections(expected, actual, 1e-3, 1e-4)


def test_make_inference_options_reads_test_compile_and_refuses_other_backends():
    assert make_inference_options(load_config(QUICKSTART), "cpu").compile is False
    assert make_inference_options(load_config(QUICKSTART, ["TEST.COMPILE", "True"]), "cpu").compile is True
    cfg = load_config(QUICKSTART, ["TEST.COMPILE", "True", "TEST.BACKEND", "onnxruntime"])
    with pytest.raises(ValueError, match="TEST.COMPILE.*TEST.BACKEND 'onnxruntime'"):
        make_inference_options(cfg)
    with pytest.raises(ValueError, match="TEST.COMPILE"):  # tools/test_net.py: before any export
        make_test_runner(cfg)


def test_no_cpp_compiler_is_an_error_naming_the_key(monkeypatch):
    from torch._inductor import config as inductor_config

    # inductor's own patch (monkeypatch's undo leaves cpp.cxx unreadable: later compilations fail)
    monkeypatch.delenv("TORCH_INDUCTOR_INSTALL_GXX", raising=False)
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/fcos-test-c++")}):
        with pytest.raises(RuntimeError, match="TEST.COMPILE.*C\\+\\+ compiler.*set TEST.COMPILE False"):
            prepare_for_inference(model, fuse_bn=False, compile=True)


def test_what_inductor_cannot_compile_is_an_error_not_an_eager_run():
    """A data-dependent branch cannot be one graph (fullgraph): a RuntimeError naming TEST.COMPILE."""

    class Branchy(nn.Module):
        def forward(self, x):
            return x + 1 if x.sum() > 0 else x - 1

    with pytest.raises(RuntimeError, match="TEST.COMPILE.*could not compile the branchy part.*set TEST.COMPILE False"):
        FrozenCompiled(Branchy(), "branchy part")(torch.ones(2))


def test_evaluations_during_training_run_eagerly(caplog):
    """periodic_eval_config: TEST.COMPILE True gives a copy with it False (each periodic evaluation
    would compile a new copy), logged once; the config given is unchanged; False passes it through."""
    from fcos_core.engine.defaults import periodic_eval_config

    cfg = load_config(QUICKSTART, ["TEST.COMPILE", "True"])
    with caplog.at_level("INFO", logger="fcos_core.trainer"):
        eval_cfg = periodic_eval_config(cfg)
    assert cfg.TEST.COMPILE and not eval_cfg.TEST.COMPILE and eval_cfg.is_frozen()
    assert make_inference_options(eval_cfg).compile is False and make_inference_options(cfg).compile is True
    assert "evaluations during training run eagerly" in caplog.text
    plain = load_config(QUICKSTART)
    assert periodic_eval_config(plain) is plain


def test_winograd_convolutions_compile_as_one_graph_around_the_kernel():
    """TEST.COMPILE with TEST.WINOGRAD: the op has a fake kernel, so inductor traces through it in one
    graph (fullgraph) and calls the compiled kernel; the result is the eager Winograd one's, at two
    sizes from one compilation."""
    from fcos_core.layers.winograd import winograd_convs_for_inference

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 3, padding=1)).eval()
    winograd_convs_for_inference(model)
    compiled = FrozenCompiled(model, "winograd part")
    graphs = None
    for size in ((20, 28), (36, 44)):
        x = torch.randn(1, 8, *size).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                actual = compiled(x)
        assert "fcos_core::winograd_conv3x3" in {e.key for e in prof.key_averages()}
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
        graphs = _compiles() if graphs is None else graphs
    assert _compiles() == graphs, "the second size compiled again"
