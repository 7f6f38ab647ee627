"""tools/convert_checkpoint.py: torchvision's FCOS into a file our checkpointer loads strictly, with a
report of every key; refusals (a config that does not fit, an unknown library, a truncated file,
objects that weights_only refuses without --trust-file); the original format round-trips."""
import argparse
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from fcos_core.config import load_config
from fcos_core.engine.coco_classes import COCO_CATEGORIES
from fcos_core.engine.conversion import UntrustedCheckpointError, convert_file
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils.checkpoint import DetectronCheckpointer
from fcos_core.utils.formats.convert import CheckpointFormatError

ROOT = Path(__file__).resolve().parents[2]
TOOL = str(ROOT / "tools" / "convert_checkpoint.py")
TV_CONFIG = "configs/torchvision/fcos_resnet50_fpn_coco.yaml"
IMPRV_CONFIG = "configs/fcos/fcos_imprv_R_50_FPN_1x.yaml"
SPEC = ROOT.parent / "shared" / "spec" / "R_50_FPN.keys.tsv"


def _cfg(path):
    return load_config(str(ROOT / path), ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"])


def _tool(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))



def test_torchvision_fcos_converts_to_a_file_that_loads_strictly(tv_file, tv_state, tmp_path):
    out, report = tmp_path / "converted.pth", tmp_path / "report.txt"
    done = _tool(tv_file, out, "--config-file", TV_CONFIG, "--report", report)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert report.read_text() == text
    assert "format: torchvision_fcos" in text
    assert "  mapped   backbone.body.conv1.weight -> backbone.body.stem.conv1.weight" in text
    assert "  dropped  backbone.body.layer1.0.bn1.num_batches_tracked (" in text
    for level in range(5):
        assert f"  filled   rpn.head.scales.{level}.scale" in text
    assert "  needs    MODEL.RESNETS.STRIDE_IN_1X1 False" in text
    assert f"run it with: --config-file {TV_CONFIG} MODEL.WEIGHT {out}" in text
    assert f"checked against {TV_CONFIG}: " in text and "loaded strictly" in text
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"model", "categories"} and saved["categories"] == COCO_CATEGORIES
    # our checkpointer, strict, into the torchvision config's model
    cfg = _cfg(TV_CONFIG)
    model = build_detection_model(cfg)
    DetectronCheckpointer(cfg, model).load(str(out), use_latest=False)
    loaded = model.state_dict()
    assert set(loaded) == set(saved["model"])
    assert torch.equal(loaded["backbone.fpn.fpn_layer3.weight"], tv_state["backbone.fpn.layer_blocks.1.0.weight"])
    person = tv_state["head.classification_head.cls_logits.bias"][1]  # COCO id 1 = our label 1
    assert loaded["rpn.head.cls_logits.bias"][0] == person


def test_an_original_config_is_refused_naming_the_config_to_use(tv_file, tmp_path):
    out = tmp_path / "converted.pth"
    done = _tool(tv_file, out, "--config-file", IMPRV_CONFIG)
    assert done.returncode == 1 and not out.exists()
    err = done.stderr
    assert f"{tv_file} holds torchvision's FCOS" in err
    assert "MODEL.RESNETS.STRIDE_IN_1X1: the config has True, the weights need False" in err
    assert f"use {TV_CONFIG}" in err and "Traceback" not in err


def _spec_state():
    state = OrderedDict()
    for line in SPEC.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        dims = () if shape in ("", "scalar") else tuple(int(d) for d in shape.split("x"))
        state[key] = torch.rand(dims) + 0.5
    return state


def test_the_original_format_round_trips(tmp_path):
    """A released file's layout ({"model": ...} with "module." keys, from ../shared/spec) goes through
    the converter by identity, loads strictly into fcos_imprv_R_50_FPN_1x, and converts again to itself."""
    state = _spec_state()
    src = tmp_path / "FCOS_imprv_R_50_FPN_1x.pth"
    torch.save({"model": OrderedDict(("module." + k, v) for k, v in state.items()), "iteration": 90000}, src)
    first = convert_file(src, tmp_path / "once.pth", cfg=_cfg(IMPRV_CONFIG))
    assert first.fmt == "fcos" and first.report.source == "original"
    assert len(first.load_report.loaded) == len(state) == 324
    second = convert_file(tmp_path / "once.pth", tmp_path / "twice.pth")
    assert second.report.mapped == [(k, k) for k in state] and not second.report.notes
    again = torch.load(tmp_path / "twice.pth", weights_only=True)["model"]
    assert list(again) == list(state) and all(torch.equal(again[k], state[k]) for k in state)


def test_an_unknown_library_and_a_truncated_file_are_refused(tmp_path):
    unknown = tmp_path / "d2_model.pth"
    torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.rand(2)}, "__author__": "x"}, unknown)
    with pytest.raises(CheckpointFormatError, match=r"d2_model.pth is not a checkpoint of a format we know .*"
                                                    r"'backbone.bottom_up.stem.conv1.weight'"):
        convert_file(unknown, tmp_path / "out.pth")
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(unknown.read_bytes()[:200])
    with pytest.raises(RuntimeError, match=r"cannot read the checkpoint .*cut.pth .*truncated"):
        convert_file(truncated, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_objects_that_weights_only_refuses_need_trust_file(tv_state, tmp_path):
    """torchvision's references save {"model", "optimizer", "args": argparse.Namespace, "epoch"}."""
    src = tmp_path / "checkpoint.pth"
    torch.save({"model": tv_state, "args": argparse.Namespace(lr=0.01), "epoch": 25}, src)
    with pytest.raises(UntrustedCheckpointError, match=r"(?s)refusing to load .*checkpoint.pth: .*"
                                                       r"\(argparse.Namespace\).*--trust-file"):
        convert_file(src, tmp_path / "out.pth")
    result = convert_file(src, tmp_path / "out.pth", trust_file=True)
    assert result.fmt == "torchvision_fcos" and result.report.filled
    assert torch.load(tmp_path / "out.pth", weights_only=True)["categories"] == COCO_CATEGORIES
