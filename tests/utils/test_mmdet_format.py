"""mmdetection's FCOS checkpoints into our detector (fcos_core.utils.formats.mmdet).

The mmdetection state dicts are made here from a compact description of mmdetection's layout, taken
from its source (mmdet/models/backbones/resnet.py: ``conv1``/``bn1`` stem, Bottleneck
``conv1 bn1 conv2 bn2 conv3 bn3 downsample.{0,1}``, DCNv2 ``conv2`` + ``conv2.conv_offset``;
necks/fpn.py: ``lateral_convs.i.conv`` / ``fpn_convs.i.conv`` from start_level 1, two extra convs;
dense_heads/anchor_free_head.py + fcos_head.py: ConvModule towers ``cls_convs.i.{conv,gn}``, no conv
bias unless conv_bias=True, ``conv_cls`` / ``conv_reg`` / ``conv_centerness``, mmcv ``Scale`` with a
0-d ``scale``), random values.
"""
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fcos_core.config import load_config
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils.formats import config_mismatches
from fcos_core.utils.formats.mmdet import looks_like_mmdet_fcos, mmdet_fcos_to_detector
from fcos_core.utils.formats.mmdet_zoo import MMDET_MODELS, mmdet_zoo_entry

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASIC = "fcos_r50_caffe_fpn_gn-head_1x_coco"
TRICKS = "fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco"
DCN = "fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_dcn_1x_coco"

# mmdetection's ResNet depths: blocks per stage; ResNet stages have width 64 * 2^s (x groups/base_width
# for ResNeXt) and output 256 * 2^s.
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bn(prefix, n, make):
    return [(prefix + ".weight", make(n)), (prefix + ".bias", make(n)), (prefix + ".running_mean", make(n)),
            (prefix + ".running_var", make(n).abs() + 0.5),
            (prefix + ".num_batches_tracked", torch.tensor(0, dtype=torch.int64))]


def mmdet_fcos_state(depth=50, groups=1, base_width=64, dcn=False, conv_bias=False, make=None):
    """An mmdetection FCOS state dict (ResNet/ResNeXt caffe or pytorch: same tensors) with random values."""
    make = make or (lambda *shape: torch.randn(*shape) * 0.05)
    sd = [("backbone.conv1.weight", make(64, 3, 7, 7))] + _bn("backbone.bn1", 64, make)
    in_ch = 64
    for s, blocks in enumerate(BLOCKS[depth]):
        width, out = groups * base_width * 2 ** s, 256 * 2 ** s
        for b in range(blocks):
            p = "backbone.layer{}.{}".format(s + 1, b)
            sd += [(p + ".conv1.weight", make(width, in_ch, 1, 1))] + _bn(p + ".bn1", width, make)
            sd += [(p + ".conv2.weight", make(width, width // groups, 3, 3))]
            if dcn and s > 0:  # stage_with_dcn=(False, True, True, True), DCNv2 deform_groups=1
                sd += [(p + ".conv2.conv_offset.weight", make(27, width, 3, 3)),
                       (p + ".conv2.conv_offset.bias", make(27))]
            sd += _bn(p + ".bn2", width, make)
            sd += [(p + ".conv3.weight", make(out, width, 1, 1))] + _bn(p + ".bn3", out, make)
            if b == 0:
                sd += [(p + ".downsample.0.weight", make(out, in_ch, 1, 1))] + _bn(p + ".downsample.1", out, make)
            in_ch = out
    for i, c_in in enumerate((512, 1024, 2048)):
        sd += [("neck.lateral_convs.{}.conv.weight".format(i), make(256, c_in, 1, 1)),
               ("neck.lateral_convs.{}.conv.bias".format(i), make(256))]
    for i in range(5):  # 0-2: P3-P5; 3: P6 from P5 ('on_output'); 4: P7
        sd += [("neck.fpn_convs.{}.conv.weight".format(i), make(256, 256, 3, 3)),
               ("neck.fpn_convs.{}.conv.bias".format(i), make(256))]
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            p = "bbox_head.{}.{}".format(tower, i)
            sd += [(p + ".conv.weight", make(256, 256, 3, 3))]
            sd += [(p + ".conv.bias", make(256))] if conv_bias else []
            if dcn and i == 3:  # dcn_on_last_conv
                sd += [(p + ".conv.conv_offset.weight", make(27, 256, 3, 3)), (p + ".conv.conv_offset.bias", make(27))]
            sd += [(p + ".gn.weight", make(256) + 1), (p + ".gn.bias", make(256))]
    for name, out in (("conv_cls", 80), ("conv_reg", 4), ("conv_centerness", 1)):
        sd += [("bbox_head.{}.weight".format(name), make(out, 256, 3, 3)),
               ("bbox_head.{}.bias".format(name), make(out))]
    sd += [("bbox_head.scales.{}.scale".format(i), torch.tensor(1.0 + 0.1 * i)) for i in range(5)]
    return OrderedDict(sd)


def _empty(*shape):
    return torch.empty(*shape)


def _cfg(name):
    return load_config(str(CONFIGS / "mmdetection" / (name + ".yaml")), ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return build_detection_model(_cfg(BASIC)).eval()


@pytest.fixture(scope="module")
def r50_dcn():
    torch.manual_seed(0)
    return build_detection_model(_cfg(DCN)).eval()


def _check_complete(state, out, report, model):
    """Every mmdetection tensor mapped (or a dropped step counter), every key of ours present."""
    sources = {src for src, _ in report.mapped}
    assert sources | {src for src, _ in report.dropped} == set(state)
    assert all(src.endswith("num_batches_tracked") for src, _ in report.dropped)
    assert set(out) == set(model.state_dict())
    model.load_state_dict(out, strict=True)


def test_basic_r50_maps_every_key_fills_the_tower_biases_and_loads_strictly(r50):
    torch.manual_seed(1)
    state = mmdet_fcos_state()
    out, report = mmdet_fcos_to_detector(state)
    _check_complete(state, out, report, r50)
    filled = sorted(dst for dst, _ in report.filled)
    towers = ("cls_tower", "bbox_tower")
    assert filled == sorted("rpn.head.{}.{}.bias".format(t, 3 * i) for t in towers for i in range(4))
    sd = r50.state_dict()
    assert all(float(sd[k].abs().sum()) == 0 for k in filled)
    assert torch.equal(sd["backbone.fpn.fpn_inner2.weight"], state["neck.lateral_convs.0.conv.weight"])
    assert torch.equal(sd["backbone.fpn.top_blocks.p6.weight"], state["neck.fpn_convs.3.conv.weight"])
    assert torch.equal(sd["backbone.fpn.fpn_layer4.bias"], state["neck.fpn_convs.2.conv.bias"])
    assert torch.equal(sd["rpn.head.cls_tower.7.weight"], state["bbox_head.cls_convs.2.gn.weight"])
    assert torch.equal(sd["rpn.head.bbox_tower.3.weight"], state["bbox_head.reg_convs.1.conv.weight"])
    assert torch.equal(sd["rpn.head.cls_logits.weight"], state["bbox_head.conv_cls.weight"])
    assert torch.equal(sd["rpn.head.centerness.bias"], state["bbox_head.conv_centerness.bias"])
    assert torch.equal(sd["backbone.body.stem.bn1.running_var"], state["backbone.bn1.running_var"])
    assert [float(sd["rpn.head.scales.{}.scale".format(i)]) for i in range(5)] == \
        [float(state["bbox_head.scales.{}.scale".format(i)]) for i in range(5)]
    assert sd["rpn.head.scales.0.scale"].shape == (1,)


def test_basic_r50_needs_its_config(r50):
    _, report = mmdet_fcos_to_detector(mmdet_fcos_state(make=_empty))
    assert report.source == "mmdetection"
    assert report.suggested_config == "mmdetection/{}.yaml".format(BASIC)
    assert config_mismatches(_cfg(BASIC), report.required_config) == []
    original = load_config(str(CONFIGS / "fcos" / "fcos_R_50_FPN_1x.yaml"))
    assert [key for key, _, _ in config_mismatches(original, report.required_config)] == ["MODEL.RESNETS.FROZEN_BN_EPS"]
    assert report.required_config["MODEL.RESNETS.STRIDE_IN_1X1"] is True
    assert report.required_config["MODEL.FCOS.NORM_REG_TARGETS"] is False


def _mmdet_head(state, feats, strides, tricks):
    """mmdetection's FCOSHead.forward_single (test mode), written from its source, on our inputs."""
    def tower(name, x):
        for i in range(4):
            p = "bbox_head.{}.{}".format(name, i)
            x = F.conv2d(x, state[p + ".conv.weight"], state.get(p + ".conv.bias"), padding=1)
            x = F.relu(F.group_norm(x, 32, state[p + ".gn.weight"], state[p + ".gn.bias"], eps=1e-5))
        return x

    def conv(name, x):
        weight, bias = state["bbox_head.{}.weight".format(name)], state["bbox_head.{}.bias".format(name)]
        return F.conv2d(x, weight, bias, padding=1)

    outs = ([], [], [])
    for level, (x, stride) in enumerate(zip(feats, strides)):
        cls_feat, reg_feat = tower("cls_convs", x), tower("reg_convs", x)
        box = conv("conv_reg", reg_feat) * state["bbox_head.scales.{}.scale".format(level)]
        box = F.relu(box) * stride if tricks else box.exp()
        outs[0].append(conv("conv_cls", cls_feat))
        outs[1].append(box)
        outs[2].append(conv("conv_centerness", reg_feat if tricks else cls_feat))
    return outs


@pytest.mark.parametrize("name,conv_bias", [(BASIC, False), (TRICKS, True)])
def test_head_outputs_equal_mmdetections(name, conv_bias):
    torch.manual_seed(2)
    state = mmdet_fcos_state(conv_bias=conv_bias)
    out, report = mmdet_fcos_to_detector(state)
    cfg = _cfg(name)
    assert config_mismatches(cfg, report.required_config) == []
    head = build_detection_model(cfg).rpn.head.eval()
    head.load_state_dict(OrderedDict((k[len("rpn.head."):], v) for k, v in out.items() if k.startswith("rpn.head.")))
    feats = [torch.randn(1, 256, s, s + 1) for s in (8, 4, 2, 2, 1)]
    with torch.no_grad():
        ours = head(feats)
    theirs = _mmdet_head(state, feats, cfg.MODEL.FCOS.FPN_STRIDES, tricks=conv_bias)
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def test_tricks_r50_maps_the_conv_biases_and_needs_the_imprv_settings(r50):
    torch.manual_seed(3)
    state = mmdet_fcos_state(conv_bias=True)
    out, report = mmdet_fcos_to_detector(state)
    _check_complete(state, out, report, r50)
    assert report.filled == []
    assert torch.equal(r50.state_dict()["rpn.head.bbox_tower.9.bias"], state["bbox_head.reg_convs.3.conv.bias"])
    assert report.suggested_config == "mmdetection/{}.yaml".format(TRICKS)
    req = report.required_config
    assert req["MODEL.FCOS.NORM_REG_TARGETS"] is True and req["MODEL.FCOS.CENTERNESS_ON_REG"] is True
    assert req["INPUT.PIXEL_MEAN"] == [103.530, 116.280, 123.675] and req["INPUT.TO_BGR255"] is True
    assert config_mismatches(_cfg(TRICKS), req) == []
    mismatched = {key for key, _, _ in config_mismatches(_cfg(BASIC), req)}
    assert mismatched == {"MODEL.FCOS.NORM_REG_TARGETS", "MODEL.FCOS.CENTERNESS_ON_REG", "INPUT.PIXEL_MEAN"}


def test_dcn_r50_maps_the_offsets_and_loads_strictly(r50_dcn):
    torch.manual_seed(4)
    state = mmdet_fcos_state(dcn=True, conv_bias=True)
    out, report = mmdet_fcos_to_detector(state)
    _check_complete(state, out, report, r50_dcn)
    sd = r50_dcn.state_dict()
    assert torch.equal(sd["backbone.body.layer3.4.conv2.conv.weight"], state["backbone.layer3.4.conv2.weight"])
    assert torch.equal(sd["backbone.body.layer2.0.conv2.offset.bias"],
                       state["backbone.layer2.0.conv2.conv_offset.bias"])
    assert torch.equal(sd["rpn.head.cls_tower.9.offset.weight"], state["bbox_head.cls_convs.3.conv.conv_offset.weight"])
    assert torch.equal(sd["rpn.head.bbox_tower.9.conv.bias"], state["bbox_head.reg_convs.3.conv.bias"])
    assert "backbone.body.layer1.0.conv2.weight" in out  # res2 has no DCN
    req = report.required_config
    assert req["MODEL.RESNETS.STAGE_WITH_DCN"] == (False, True, True, True)
    assert req["MODEL.FCOS.USE_DCN_IN_TOWER"] is True and req["MODEL.RESNETS.WITH_MODULATED_DCN"] is True
    assert report.suggested_config == "mmdetection/{}.yaml".format(DCN)
    assert config_mismatches(_cfg(DCN), req) == []


@pytest.mark.parametrize("edit,match", [
    (lambda sd: sd.__setitem__("bbox_head.conv_obj.weight", torch.zeros(1, 256, 3, 3)), "bbox_head.conv_obj.weight"),
    (lambda sd: sd.__setitem__("backbone.layer2.1.conv4.weight", torch.zeros(1)), "backbone.layer2.1.conv4.weight"),
    (lambda sd: sd.__setitem__("bbox_head.cls_convs.1.gn.weight", torch.zeros(128)),
     r"'bbox_head.cls_convs.1.gn.weight' has shape \(128,\), expected \(256,\)"),
    (lambda sd: sd.__setitem__("bbox_head.scales.2.scale", torch.ones(2)), "bbox_head.scales.2.scale"),
    (lambda sd: sd.__setitem__("neck.lateral_convs.1.conv.weight", torch.zeros(256, 512, 1, 1)),
     "neck.lateral_convs.1.conv.weight"),
    (lambda sd: sd.pop("neck.fpn_convs.4.conv.bias"), "missing key 'neck.fpn_convs.4.conv.bias'"),
    (lambda sd: sd.pop("bbox_head.reg_convs.2.gn.bias"), "bbox_head.reg_convs.2.gn.bias"),
])
def test_unknown_keys_wrong_shapes_and_missing_tensors_are_refused_by_name(edit, match):
    state = mmdet_fcos_state(make=_empty)
    edit(state)
    with pytest.raises(ValueError, match=match):
        mmdet_fcos_to_detector(state)


def test_architectures_we_do_not_build_are_refused_clearly():
    state = mmdet_fcos_state(make=_empty)
    basic_block = OrderedDict((k, v) for k, v in state.items() if ".conv3." not in k)
    with pytest.raises(ValueError, match="conv3"):
        mmdet_fcos_to_detector(basic_block)
    short = OrderedDict((k, v) for k, v in state.items() if not k.startswith("backbone.layer3.5."))
    with pytest.raises(ValueError, match="blocks"):
        mmdet_fcos_to_detector(short)
    with pytest.raises(ValueError, match="not an mmdetection FCOS"):
        mmdet_fcos_to_detector({"rpn.head.cls_logits.weight": torch.zeros(80, 256, 3, 3)})


def test_looks_like_mmdet_fcos(r50):
    state = mmdet_fcos_state(make=_empty)
    assert looks_like_mmdet_fcos(state)
    assert looks_like_mmdet_fcos({"meta": {"mmdet_version": "2.8.0"}, "state_dict": state})
    assert not looks_like_mmdet_fcos(r50.state_dict())
    retina = OrderedDict((k.replace("conv_centerness", "retina_cls"), v) for k, v in state.items())
    assert not looks_like_mmdet_fcos(retina)
    assert not looks_like_mmdet_fcos({"backbone.conv1.weight": torch.zeros(1)})


def test_the_checkpoint_dict_and_its_meta_are_read():
    state = mmdet_fcos_state(make=_empty)
    ms = "fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco"
    out, report = mmdet_fcos_to_detector({"meta": {"zoo_name": ms}, "state_dict": state})
    assert report.suggested_config == "mmdetection/{}.yaml".format(ms)
    assert "backbone.body.stem.conv1.weight" in out
    # mmdetection's config text (meta["config"]) says tricks and a mean the tensors do not show
    text = ("model = dict(backbone=dict(type='ResNet', depth=50, style='caffe'),\n"
            "    bbox_head=dict(type='FCOSHead', norm_on_bbox=True, centerness_on_reg=False),\n"
            "    test_cfg=dict(nms=dict(type='nms', iou_threshold=0.55)))\n"
            "img_norm_cfg = dict(mean=[100.0, 110.0, 120.0], std=[1.0, 1.0, 1.0], to_rgb=False)\n")
    _, report = mmdet_fcos_to_detector(state, meta={"config": text})
    req = report.required_config
    assert req["MODEL.FCOS.NORM_REG_TARGETS"] is True and req["MODEL.FCOS.CENTERNESS_ON_REG"] is False
    assert req["INPUT.PIXEL_MEAN"] == [100.0, 110.0, 120.0]
    assert report.suggested_config == ""  # no released model has these settings
    assert any("NMS IoU 0.55" in note for note in report.notes)
    _, report3 = mmdet_fcos_to_detector(state, meta={"cfg": text})  # mmengine's key (mmdetection 3.x)
    assert report3.required_config == req


@pytest.mark.parametrize("model", list(MMDET_MODELS.values()), ids=lambda m: m.name)
def test_every_zoo_entry_has_a_config_that_its_weights_accept(model):
    assert model.url.endswith("/{}/{}".format(model.name, model.filename))
    assert len(model.sha256_prefix) == 8 and int(model.sha256_prefix, 16) >= 0
    assert mmdet_zoo_entry(model.v3_name) is model and mmdet_zoo_entry(model.url) is model
    cfg = load_config(str(CONFIGS / model.config))
    assert cfg.MODEL.WEIGHT == model.name
    assert cfg.MODEL.FCOS.NMS_TH == model.settings.nms_iou
    base = 64 if model.groups == 1 else 4
    state = mmdet_fcos_state(model.depth, model.groups, base, model.dcn, conv_bias=model.settings.norm_on_bbox,
                             make=_empty)
    _, report = mmdet_fcos_to_detector(state, meta={"zoo_name": model.name})
    assert report.suggested_config == model.config
    assert config_mismatches(cfg, report.required_config) == []
    # without the zoo name, the settings guessed from the tensors lead to a config with the same needs
    _, guessed = mmdet_fcos_to_detector(state)
    assert config_mismatches(load_config(str(CONFIGS / guessed.suggested_config)), report.required_config) == []


def test_rgb_normalisation_equals_mmdetections():
    """(x - mean) / std in RGB 0-255 (mmdetection) equals our RGB 0-1 with the values the config sets."""
    model = MMDET_MODELS["fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco"]
    mean, std, to_rgb = model.settings.normalize
    cfg = load_config(str(CONFIGS / model.config))
    assert to_rgb and cfg.INPUT.TO_BGR255 is False
    rgb01 = torch.rand(3, 4, 5, dtype=torch.float64)
    theirs = (rgb01 * 255 - torch.tensor(mean, dtype=torch.float64)[:, None, None]) / \
        torch.tensor(std, dtype=torch.float64)[:, None, None]
    ours = (rgb01 - torch.tensor(cfg.INPUT.PIXEL_MEAN, dtype=torch.float64)[:, None, None]) / \
        torch.tensor(cfg.INPUT.PIXEL_STD, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
