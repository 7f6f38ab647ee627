"""The whole detector: every config builds and trains a step, released key layouts load strictly,
outputs match torchvision's FCOS with mapped weights, and results do not depend on batching."""
import glob
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from fcos_core.config import cfg as default_cfg
from fcos_core.modeling.detector import build_detection_model
from fcos_core.modeling.rpn.fcos.loss import flatten_level_outputs
from fcos_core.structures.bounding_box import BoxList
from fcos_core.utils.checkpoint import DetectronCheckpointer
from fcos_core.utils.imagenet_weights import torchvision_fcos_to_detector

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "spec"
CONFIGS = sorted(glob.glob(str(ROOT / "configs" / "**" / "*.yaml"), recursive=True))


def load_cfg(name_or_path, *opts):
    c = default_cfg.clone()
    path = name_or_path if os.path.isabs(name_or_path) else str(ROOT / "configs" / "fcos" / name_or_path)
    c.merge_from_file(path)
    c.merge_from_list(["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", *opts])
    return c


def read_spec(name):
    rows = []
    for line in (SPEC / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, kind, dtype = line.split("\t")[:4]
        dims = () if shape in ("", "scalar") else tuple(int(d) for d in shape.split("x"))
        rows.append((key, dims, kind, dtype))
    return rows


def _targets(sizes, boxes_per_image):
    targets = []
    for (h, w), boxes in zip(sizes, boxes_per_image):
        b = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), (w, h), mode="xyxy")
        b.add_field("labels", torch.arange(1, len(boxes) + 1, dtype=torch.int64))
        targets.append(b)
    return targets


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT / "configs"))
def test_every_config_trains_a_step_and_runs_inference(config):
    torch.manual_seed(0)
    c = load_cfg(config)
    model = build_detection_model(c)
    model.train()
    # small inputs: this runs for every config, the X-101 DCN ones included (about 10 s each on 2 cores)
    images = [torch.randn(3, 64, 80)]
    targets = _targets([(64, 80)], [[[10, 12, 60, 50], [4, 4, 20, 30]]])
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_reg", "loss_centerness"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        out = model([torch.randn(3, 48, 64)])
    assert len(out) == 1 and out[0].size == (64, 48)
    assert out[0].has_field("scores") and out[0].has_field("labels")


@pytest.mark.parametrize(
    "config,spec",
    [
        ("fcos_R_50_FPN_1x.yaml", "R_50_FPN.keys.tsv"),
        ("fcos_imprv_R_50_FPN_1x.yaml", "R_50_FPN.keys.tsv"),
        ("fcos_bn_bs16_MNV2_FPN_1x.yaml", "MNV2_FPN.keys.tsv"),
    ],
)
@pytest.mark.parametrize("layout", ["wrapped_module_prefix", "bare"])
def test_released_checkpoint_layout_loads_strictly(tmp_path, config, spec, layout):
    rows = read_spec(spec)
    gen = torch.Generator().manual_seed(0)
    state = OrderedDict()
    for key, shape, kind, dtype in rows:
        if dtype == "int64":
            state[key] = torch.randint(0, 100, shape, generator=gen)
        else:
            state[key] = torch.rand(shape, generator=gen) + 0.5
    obj = state
    if layout == "wrapped_module_prefix":
        obj = {"model": OrderedDict(("module." + k, v) for k, v in state.items()), "iteration": 90000}
    path = tmp_path / "released.pth"
    torch.save(obj, path)
    model = build_detection_model(load_cfg(config))
    DetectronCheckpointer(None, model).load(str(path), use_latest=False)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key
    # trainability as recorded in the spec (FREEZE_CONV_BODY_AT)
    params = dict(model.named_parameters())
    for key, shape, kind, dtype in rows:
        if kind.startswith("param"):
            assert params[key].requires_grad == ("requires_grad=False" not in kind), key


def assert_close_to_scale(actual, expected, tol=1e-4):
    """Equal to ``tol`` relative to the tensor's scale: random ResNet weights give activations in
    the thousands, where float32 rounding alone exceeds any fixed absolute tolerance."""
    scale = expected.abs().max().clamp(min=1.0)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)
    assert (actual - expected).norm() <= tol * expected.norm()


def test_forward_parity_with_torchvision_fcos():
    """Backbone, FPN and head outputs equal torchvision's FCOS with the same (random) weights.

    Options matching torchvision's model: stride on the 3x3 conv (STRIDE_IN_1X1 False), P6 from
    P5, centerness on the regression tower, stride-normalised ReLU box outputs. torchvision's
    BatchNorm gets eps 0 to equal our FrozenBatchNorm2d, which has none (as the original).
    """
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(0)
    tv = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in tv.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif t.dim() == 1:  # norm weights
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    for m in tv.modules():
        if hasattr(m, "eps") and isinstance(m, torch.nn.modules.batchnorm._NormBase):
            m.eps = 0.0
    c = load_cfg("fcos_imprv_R_50_FPN_1x.yaml", "MODEL.RESNETS.STRIDE_IN_1X1", "False")
    ours = build_detection_model(c).eval()
    mapped = torchvision_fcos_to_detector(tv.state_dict(), add_scales=False)
    missing = set(ours.state_dict()) - set(mapped)
    assert missing == {f"rpn.head.scales.{i}.scale" for i in range(5)}
    for i in range(5):
        mapped[f"rpn.head.scales.{i}.scale"] = torch.ones(1)
    ours.load_state_dict(mapped, strict=True)

    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        tv_feats = list(tv.backbone(x).values())
        our_feats = ours.backbone(x)
        assert len(tv_feats) == len(our_feats) == 5
        for a, b in zip(tv_feats, our_feats):
            assert a.shape == b.shape
            assert_close_to_scale(b, a)
        tv_head = tv.head(tv_feats)
        ours.rpn.head.train()  # raw stride-normalised distances, as torchvision's head returns
        logits, reg, ctr = ours.rpn.head(our_feats)
    assert_close_to_scale(flatten_level_outputs(logits, 80), tv_head["cls_logits"])
    assert_close_to_scale(flatten_level_outputs(reg, 4), tv_head["bbox_regression"])
    assert_close_to_scale(flatten_level_outputs(ctr, 1), tv_head["bbox_ctrness"])


def test_training_step_with_an_image_without_boxes():
    torch.manual_seed(0)
    model = build_detection_model(load_cfg("fcos_imprv_R_50_FPN_1x.yaml")).train()
    images = [torch.randn(3, 96, 128), torch.randn(3, 96, 128)]
    targets = _targets([(96, 128), (96, 128)], [[[10, 12, 60, 70]], []])
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # and a batch with no boxes at all: regression and centerness losses are exactly 0
    model.zero_grad()
    losses = model(images, _targets([(96, 128), (96, 128)], [[], []]))
    assert losses["loss_reg"].item() == 0.0 and losses["loss_centerness"].item() == 0.0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0
    sum(losses.values()).backward()


def test_detections_do_not_depend_on_the_batch():
    """Image A alone and A beside a smaller image B (so A gets no extra padding) give the same detections.

    B itself is not compared: GroupNorm in the head normalises over the padded feature map, so
    padding changes a padded image's features (as in the original).
    """
    torch.manual_seed(0)
    c = load_cfg("fcos_R_50_FPN_1x.yaml", "MODEL.FCOS.INFERENCE_TH", 0.3)
    model = build_detection_model(c).eval()
    torch.nn.init.normal_(model.rpn.head.cls_logits.bias, std=1.0)  # plenty of candidates
    a = torch.randn(3, 128, 160)
    b = torch.randn(3, 96, 100)
    with torch.no_grad():
        alone = model([a])[0]
        pair = model([a, b])
    assert len(alone) > 0
    assert pair[0].size == alone.size and pair[1].size == (100, 96)
    torch.testing.assert_close(pair[0].bbox, alone.bbox, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(pair[0].get_field("scores"), alone.get_field("scores"), rtol=1e-4, atol=1e-5)
    assert torch.equal(pair[0].get_field("labels"), alone.get_field("labels"))


@pytest.mark.parametrize("num_classes", ["0", "1"])
def test_a_model_without_a_class_count_is_a_clear_error(num_classes):
    """NUM_CLASSES 0 ('from the data') is resolved by the engine; building a model straight from such
    a config names the key and the value instead of failing on a negative tensor size."""
    with pytest.raises(ValueError, match=r"MODEL\.FCOS\.NUM_CLASSES is {}".format(num_classes)):
        build_detection_model(load_cfg(str(ROOT / "configs" / "quickstart" / "fcos_shapes.yaml"), "MODEL.FCOS.NUM_CLASSES",
                                      num_classes))
