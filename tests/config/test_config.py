"""Tests of fcos_core.config: defaults, strict merging, configs, devices."""

import glob
import os
import warnings

import pytest
import torch

from fcos_core.config import (
    CfgNode,
    UnknownConfigKeyError,
    cfg,
    load_config,
    resolve_device,
)
from fcos_core.config import config as config_module

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True))


@pytest.fixture
def fresh():
    """A mutable copy of the defaults, so tests never touch the global cfg."""
    return cfg.clone()


# ---------------------------------------------------------------------------- #
# Defaults
# ---------------------------------------------------------------------------- #
def test_defaults_have_the_original_values():
    assert cfg.INPUT.PIXEL_MEAN == [102.9801, 115.9465, 122.7717]
    assert cfg.INPUT.PIXEL_STD == [1.0, 1.0, 1.0]
    assert cfg.INPUT.TO_BGR255 is True
    assert cfg.INPUT.MIN_SIZE_TRAIN == (800,)
    assert cfg.INPUT.MAX_SIZE_TEST == 1333
    assert cfg.MODEL.FCOS.FPN_STRIDES == [8, 16, 32, 64, 128]
    assert cfg.MODEL.FCOS.NUM_CLASSES == 81
    assert cfg.MODEL.FCOS.INFERENCE_TH == 0.05
    assert cfg.MODEL.FCOS.NMS_TH == 0.6
    assert cfg.MODEL.FCOS.PRE_NMS_TOP_N == 1000
    assert cfg.MODEL.FCOS.PRIOR_PROB == 0.01
    assert (cfg.MODEL.FCOS.LOSS_ALPHA, cfg.MODEL.FCOS.LOSS_GAMMA) == (0.25, 2.0)
    assert cfg.MODEL.FCOS.IOU_LOSS_TYPE == "iou"
    assert cfg.TEST.DETECTIONS_PER_IMG == 100
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is True
    assert cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT == 2
    assert cfg.MODEL.RETINANET.USE_C5 is True
    assert cfg.PATHS_CATALOG.endswith(os.path.join("fcos_core", "config", "paths_catalog.py"))


def test_imprv_tricks_and_new_options_default_to_the_original_behaviour():
    fcos = cfg.MODEL.FCOS
    assert fcos.CENTER_SAMPLING_RADIUS == 0.0
    assert fcos.NORM_REG_TARGETS is False
    assert fcos.CENTERNESS_ON_REG is False
    assert fcos.USE_DCN_IN_TOWER is False
    assert cfg.SOLVER.OPTIMIZER == "SGD"
    assert cfg.SOLVER.LR_SCHEDULER == "WarmupMultiStepLR"
    assert cfg.SOLVER.CLIP_GRAD_NORM == 0.0
    assert cfg.SOLVER.AMP is False and cfg.TEST.AMP is False
    assert cfg.SOLVER.CHANNELS_LAST is True  # oneDNN and cuDNN tensor cores prefer it (defaults.py)
    assert cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN == 0.5
    assert cfg.TEST.BBOX_AUG.ENABLED is False


def test_every_node_is_the_strict_class():
    def walk(node):
        assert type(node) is CfgNode
        for value in node.values():
            if isinstance(value, dict):
                walk(value)

    walk(cfg)


def test_clone_keeps_the_strict_class_and_is_independent(fresh):
    assert type(fresh) is CfgNode
    assert type(fresh.MODEL.FCOS) is CfgNode
    fresh.MODEL.FCOS.NUM_CONVS = 2
    assert cfg.MODEL.FCOS.NUM_CONVS == 4
    with pytest.raises(UnknownConfigKeyError):
        fresh.merge_from_list(["MODEL.FCOS.NUM_CONVZ", "2"])


# ---------------------------------------------------------------------------- #
# Unknown keys
# ---------------------------------------------------------------------------- #
def test_unknown_key_on_the_command_line_names_key_and_suggestion(fresh):
    with pytest.raises(KeyError) as info:
        fresh.merge_from_list(["MODEL.FCOS.NUM_CONVZ", "2"])
    msg = str(info.value)
    assert "'MODEL.FCOS.NUM_CONVZ'" in msg
    assert "command-line" in msg
    assert "did you mean 'MODEL.FCOS.NUM_CONVS'?" in msg
    assert fresh.MODEL.FCOS.NUM_CONVS == 4


def test_unknown_key_in_a_yaml_file_names_key_file_and_suggestion(fresh, tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("MODEL:\n  FCOS:\n    NUM_CONVS: 2\n    CENTERNES_ON_REG: True\n")
    with pytest.raises(KeyError) as info:
        fresh.merge_from_file(str(path))
    msg = str(info.value)
    assert msg == (
        "Unknown config key 'MODEL.FCOS.CENTERNES_ON_REG' in {}; "
        "did you mean 'MODEL.FCOS.CENTERNESS_ON_REG'?".format(path)
    )
    # The check runs before merging: nothing of the bad file is applied.
    assert fresh.MODEL.FCOS.NUM_CONVS == 4


def test_dotted_key_nested_in_yaml_is_caught(fresh, tmp_path):
    # An early upstream X-101 config wrote "RESNETS.STRIDE_IN_1X1" under RESNETS.
    path = tmp_path / "nested.yaml"
    path.write_text("MODEL:\n  RESNETS:\n    RESNETS.STRIDE_IN_1X1: False\n")
    with pytest.raises(KeyError, match=r"did you mean 'MODEL\.RESNETS\.STRIDE_IN_1X1'"):
        fresh.merge_from_file(str(path))


def test_unknown_group_suggests_the_group(fresh):
    expected = r"'MODEL\.FCOSS\.NMS_TH'.*did you mean 'MODEL\.FCOS\.NMS_TH'"
    with pytest.raises(KeyError, match=expected):
        fresh.merge_from_list(["MODEL.FCOSS.NMS_TH", "0.5"])


def test_unknown_key_without_close_match_has_no_suggestion(fresh):
    with pytest.raises(KeyError) as info:
        fresh.merge_from_list(["ZZZZZZ", "1"])
    assert "did you mean" not in str(info.value)
    assert "'ZZZZZZ'" in str(info.value)


def test_unknown_key_in_merge_from_other_cfg(fresh):
    other = CfgNode({"SOLVER": {"BASE_LRR": 0.02}})
    with pytest.raises(KeyError, match=r"did you mean 'SOLVER\.BASE_LR'"):
        fresh.merge_from_other_cfg(other)


# ---------------------------------------------------------------------------- #
# Values and types
# ---------------------------------------------------------------------------- #
def test_known_keys_merge_and_are_parsed(fresh, tmp_path):
    fresh.merge_from_list(["MODEL.FCOS.NUM_CONVS", "2", "INPUT.MIN_SIZE_TRAIN", "(640, 800)"])
    assert fresh.MODEL.FCOS.NUM_CONVS == 2
    assert fresh.INPUT.MIN_SIZE_TRAIN == (640, 800)
    path = tmp_path / "ok.yaml"
    path.write_text('SOLVER:\n  OPTIMIZER: "AdamW"\n  STEPS: (10, 20)\n')
    fresh.merge_from_file(str(path))
    assert fresh.SOLVER.OPTIMIZER == "AdamW"
    assert fresh.SOLVER.STEPS == (10, 20)


def test_wrong_type_on_the_command_line_names_the_full_key(fresh):
    with pytest.raises(ValueError, match=r"MODEL\.FCOS\.NUM_CONVS"):
        fresh.merge_from_list(["MODEL.FCOS.NUM_CONVS", "four"])


def test_wrong_type_in_a_yaml_file_names_key_and_file(fresh, tmp_path):
    path = tmp_path / "badtype.yaml"
    path.write_text("MODEL:\n  FCOS:\n    FPN_STRIDES: 8\n")
    with pytest.raises(ValueError) as info:
        fresh.merge_from_file(str(path))
    msg = str(info.value)
    assert "MODEL.FCOS.FPN_STRIDES" in msg
    assert str(path) in msg
    assert "list" in msg and "int" in msg


def test_merging_into_a_frozen_config_is_refused():
    frozen = cfg.clone()
    frozen.freeze()
    with pytest.raises(AttributeError, match="frozen"):
        frozen.merge_from_list(["MODEL.FCOS.NUM_CONVS", "2"])
    assert frozen.MODEL.FCOS.NUM_CONVS == 4


def test_load_config_merges_file_then_overrides_and_freezes():
    path = os.path.join(REPO_ROOT, "configs", "fcos", "fcos_imprv_R_50_FPN_1x.yaml")
    loaded = load_config(path, ["MODEL.FCOS.NMS_TH", "0.5"])
    assert loaded.is_frozen()
    assert loaded.MODEL.FCOS.NORM_REG_TARGETS is True
    assert loaded.MODEL.FCOS.NMS_TH == 0.5
    assert cfg.MODEL.FCOS.NORM_REG_TARGETS is False  # global defaults untouched


# ---------------------------------------------------------------------------- #
# Shipped configs
# ---------------------------------------------------------------------------- #
def test_the_model_zoo_configs_are_present():
    names = {os.path.basename(p) for p in ALL_CONFIGS}
    expected = {
        "fcos_R_50_FPN_1x.yaml",
        "fcos_imprv_R_50_FPN_1x.yaml",
        "fcos_imprv_dcnv2_R_50_FPN_1x.yaml",
        "fcos_R_101_FPN_2x.yaml",
        "fcos_imprv_R_101_FPN_2x.yaml",
        "fcos_imprv_dcnv2_R_101_FPN_2x.yaml",
        "fcos_X_101_32x8d_FPN_2x.yaml",
        "fcos_imprv_X_101_32x8d_FPN_2x.yaml",
        "fcos_imprv_dcnv2_X_101_32x8d_FPN_2x.yaml",
        "fcos_X_101_64x4d_FPN_2x.yaml",
        "fcos_imprv_X_101_64x4d_FPN_2x.yaml",
        "fcos_imprv_dcnv2_X_101_64x4d_FPN_2x.yaml",
        "fcos_bn_bs16_MNV2_FPN_1x.yaml",
        "fcos_syncbn_bs32_MNV2_FPN_1x.yaml",
        "fcos_syncbn_bs32_c128_MNV2_FPN_1x.yaml",
        "fcos_syncbn_bs32_c128_ms_MNV2_FPN_1x.yaml",
        "fcos_syncbn_bs64_c128_ms_MNV2_FPN_1x.yaml",
    }
    assert expected <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_every_config_merges_into_the_defaults(path):
    merged = cfg.clone()
    merged.merge_from_file(path)
    if "/configs/fcos/" in path.replace(os.sep, "/"):
        assert merged.MODEL.FCOS_ON is True
        assert merged.MODEL.RPN_ONLY is True
        assert merged.MODEL.RETINANET.USE_C5 is False
        assert merged.DATALOADER.SIZE_DIVISIBILITY == 32


def test_r50_config_has_the_paper_schedule():
    merged = load_config(os.path.join(REPO_ROOT, "configs", "fcos", "fcos_R_50_FPN_1x.yaml"))
    assert merged.MODEL.BACKBONE.CONV_BODY == "R-50-FPN-RETINANET"
    assert merged.MODEL.RESNETS.BACKBONE_OUT_CHANNELS == 256
    assert merged.SOLVER.BASE_LR == 0.01
    assert merged.SOLVER.STEPS == (60000, 80000)
    assert merged.SOLVER.MAX_ITER == 90000
    assert merged.SOLVER.WARMUP_METHOD == "constant"


def test_imprv_configs_switch_on_every_improvement():
    for path in glob.glob(os.path.join(REPO_ROOT, "configs", "fcos", "fcos_imprv_*.yaml")):
        fcos = load_config(path).MODEL.FCOS
        assert fcos.NORM_REG_TARGETS and fcos.CENTERNESS_ON_REG, path
        assert fcos.CENTER_SAMPLING_RADIUS == 1.5, path
        assert fcos.IOU_LOSS_TYPE == "giou", path
        assert fcos.USE_DCN_IN_TOWER == ("dcnv2" in os.path.basename(path)), path


def test_resnext_configs_stride_in_3x3():
    for path in glob.glob(os.path.join(REPO_ROOT, "configs", "fcos", "*X_101*.yaml")):
        assert load_config(path).MODEL.RESNETS.STRIDE_IN_1X1 is False, path


# ---------------------------------------------------------------------------- #
# resolve_device
# ---------------------------------------------------------------------------- #
@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(config_module, "_WARNED_FALLBACK", set())


def test_cpu_stays_cpu(no_cuda):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_falls_back_to_cpu_and_warns_once(no_cuda, device):
    with pytest.warns(RuntimeWarning, match="MODEL.DEVICE"):
        assert resolve_device(device) == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device(device) == "cpu"


def test_cuda_with_cuda_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="MODEL.DEVICE"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", "", None])
def test_invalid_device_raises_naming_the_key(no_cuda, device):
    with pytest.raises(ValueError, match="MODEL.DEVICE"):
        resolve_device(device)
