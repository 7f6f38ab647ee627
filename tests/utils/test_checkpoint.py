"""Checkpoint saving/loading, weight-file formats and the refusal of files that would run code."""
import math
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from fcos_core.config.paths_catalog import ModelCatalog
from fcos_core.utils.c2_model_loading import (
    UnsafePickleError,
    convert_torchvision_state_dict,
    load_c2_format,
    rename_c2_resnet_key,
    safe_load_pickle,
)
from fcos_core.utils.checkpoint import Checkpointer, DetectronCheckpointer
from fcos_core.utils.model_serialization import load_state_dict, match_state_dict
from fcos_core.utils.model_zoo import cache_url, url_filename


class TinyBody(nn.Module):
    """Names like our ResNet body: stem.conv1, stem.bn1, layer1.0.conv1 ..."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 4, 3, bias=False), bn1=nn.BatchNorm2d(4)))
        block = nn.Module()
        block.conv1 = nn.Conv2d(4, 4, 1, bias=False)
        block.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(block)


class TinyDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(OrderedDict(body=TinyBody()))
        self.head = nn.Conv2d(4, 2, 1)


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g))
    return model


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("wrap", ["model", "bare", "module_prefix"])
def test_full_checkpoint_loads_strictly_in_every_layout(tmp_path, wrap):
    src = _randomise(TinyDetector(), 0)
    state = src.state_dict()
    if wrap == "module_prefix":
        state = OrderedDict(("module." + k, v) for k, v in state.items())
    obj = state if wrap == "bare" else {"model": state, "iteration": 7}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    dst = TinyDetector()
    extra = DetectronCheckpointer(None, dst).load(str(path), use_latest=False)
    _assert_same_weights(src, dst)
    if wrap != "bare":
        assert extra == {"iteration": 7}


def test_checkpoint_that_does_not_fit_reports_every_problem(tmp_path):
    state = TinyDetector().state_dict()
    state["head.weight"] = torch.zeros(3, 4, 1, 1)  # wrong shape
    del state["head.bias"]  # missing
    state["extra.weight"] = torch.zeros(1)  # unexpected
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(RuntimeError) as info:
        DetectronCheckpointer(None, TinyDetector()).load(str(path), use_latest=False)
    msg = str(info.value)
    assert str(path) in msg
    assert "missing in the file (1)" in msg and "head.bias" in msg
    assert "unexpected in the file (1)" in msg and "extra.weight" in msg
    assert "head.weight: model (2, 4, 1, 1) vs file (3, 4, 1, 1)" in msg


def test_pth_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": os.getcwd}, path)  # a function reference: would need code to rebuild
    with pytest.raises(pickle.UnpicklingError, match="refusing to load .*evil.pth"):
        Checkpointer(TinyDetector()).load(str(path), use_latest=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pkl_with_code_is_refused_naming_file_and_global(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": _Evil()}}, f)
    with pytest.raises(UnsafePickleError) as info:
        safe_load_pickle(path)
    assert "evil.pkl" in str(info.value)
    assert "system" in str(info.value)


def test_c2_names_are_renamed():
    assert rename_c2_resnet_key("conv1_w") == "stem.conv1.weight"
    assert rename_c2_resnet_key("res_conv1_bn_s") == "stem.bn1.weight"
    assert rename_c2_resnet_key("res2_0_branch2a_w") == "layer1.0.conv1.weight"
    assert rename_c2_resnet_key("res4_5_branch2c_bn_b") == "layer3.5.bn3.bias"
    assert rename_c2_resnet_key("res3_0_branch1_w") == "layer2.0.downsample.0.weight"
    assert rename_c2_resnet_key("res3_0_branch1_bn_s") == "layer2.0.downsample.1.weight"
    assert rename_c2_resnet_key("fc1000_w") is None


def test_detectron_pkl_initialises_the_backbone_by_suffix(tmp_path):
    rng = np.random.default_rng(0)
    blobs = {
        "conv1_w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "res_conv1_bn_s": rng.standard_normal(4).astype(np.float32),
        "res_conv1_bn_b": rng.standard_normal(4).astype(np.float32),
        "res2_0_branch2a_w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
        "res2_0_branch2a_bn_s": rng.standard_normal(4).astype(np.float32),
        "res2_0_branch2a_bn_b": rng.standard_normal(4).astype(np.float32),
        "fc1000_w": rng.standard_normal((10, 4)).astype(np.float32),
    }
    path = tmp_path / "R-tiny.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    state = load_c2_format(str(path))
    assert "fc1000_w" not in state and "stem.conv1.weight" in state
    model = TinyDetector()
    DetectronCheckpointer(None, model).load(str(path), use_latest=False)
    body = model.backbone.body
    assert torch.equal(body.stem.conv1.weight, torch.from_numpy(blobs["conv1_w"]))
    assert torch.equal(body.layer1[0].bn1.bias, torch.from_numpy(blobs["res2_0_branch2a_bn_b"]))


def test_torchvision_classifier_state_dict_maps_onto_the_body(tmp_path):
    tv = nn.Module()
    tv.conv1 = nn.Conv2d(3, 4, 3, bias=False)
    tv.bn1 = nn.BatchNorm2d(4)
    tv.layer1 = TinyBody().layer1
    tv.fc = nn.Linear(4, 10)
    _randomise(tv, 3)
    mapped = convert_torchvision_state_dict(tv.state_dict())
    assert "stem.conv1.weight" in mapped and not any(k.startswith("fc.") for k in mapped)
    path = tmp_path / "resnet_tiny.pth"
    torch.save(tv.state_dict(), path)
    model = TinyDetector()
    DetectronCheckpointer(None, model).load(str(path), use_latest=False)
    assert torch.equal(model.backbone.body.stem.bn1.running_var, tv.bn1.running_var)
    assert torch.equal(model.backbone.body.layer1[0].conv1.weight, tv.layer1[0].conv1.weight)


def test_suffix_matching_prefers_the_longest_suffix():
    model_state = {"a.layer1.0.conv1.weight": torch.zeros(1), "a.stem.conv1.weight": torch.zeros(2)}
    loaded = {"conv1.weight": torch.ones(2), "layer1.0.conv1.weight": torch.ones(1)}
    new, report = match_state_dict(model_state, loaded, by_suffix=True)
    assert new["a.layer1.0.conv1.weight"].shape == (1,)
    assert new["a.stem.conv1.weight"].shape == (2,)
    assert report.ok


def test_save_is_atomic_and_resume_uses_last_checkpoint(tmp_path):
    model = _randomise(TinyDetector(), 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ck = Checkpointer(model, opt, save_dir=str(tmp_path), save_to_disk=True)
    ck.save("model_0000010", iteration=10)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000010.pth"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")]
    fresh = TinyDetector()
    extra = Checkpointer(fresh, torch.optim.SGD(fresh.parameters(), lr=0.1), save_dir=str(tmp_path)).load()
    assert extra == {"iteration": 10}
    _assert_same_weights(model, fresh)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = TinyDetector()
    ck = Checkpointer(model, save_dir=str(tmp_path), save_to_disk=True)
    ck.save("model_a")
    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        ck.save("model_b")
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_a.pth"]


def test_catalog_names_and_offline_error(tmp_path, monkeypatch):
    url = ModelCatalog.get("ImageNetPretrained/MSRA/R-50")
    assert url == "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl"
    with pytest.raises(KeyError, match="unknown catalog name"):
        ModelCatalog.get("ImageNetPretrained/MSRA/R-49")
    assert url_filename("https://x.org/plus/s/abc/download#mobilenet_v2-ecbe2b5.pth") == "mobilenet_v2-ecbe2b5.pth"

    def offline(url, dst, progress=True):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError) as info:
        cache_url(url, model_dir=str(tmp_path))
    msg = str(info.value)
    assert url in msg and str(tmp_path / "R-50.pkl") in msg
    # a file put there by hand is used without any download
    (tmp_path / "R-50.pkl").write_bytes(b"x")
    assert cache_url(url, model_dir=str(tmp_path)) == str(tmp_path / "R-50.pkl")


def test_load_state_dict_non_strict_reports_and_copies():
    model = TinyDetector()
    state = {"head.weight": torch.ones(2, 4, 1, 1)}
    report = load_state_dict(model, state, strict=False)
    assert report.loaded == ["head.weight"]
    assert "head.bias" in report.missing
    assert torch.equal(model.head.weight, torch.ones(2, 4, 1, 1))


def test_torchvision_mobilenet_v2_initialises_the_mnv2_body(tmp_path):
    import torchvision

    from fcos_core.config import cfg
    from fcos_core.modeling.detector import build_detection_model

    c = cfg.clone()
    c.merge_from_file(str(__import__("pathlib").Path(__file__).resolve().parents[2] / "configs/fcos/fcos_bn_bs16_MNV2_FPN_1x.yaml"))
    c.merge_from_list(["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"])
    model = build_detection_model(c)
    tv = _randomise(torchvision.models.mobilenet_v2(weights=None), 5)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(tv.state_dict(), path)
    report = DetectronCheckpointer(None, model).load(str(path), use_latest=False)
    assert report == {}
    body = model.backbone.body
    # a block with expansion: torchvision conv.1.0 (depthwise) is our conv.3
    assert torch.equal(body.features[2].conv[3].weight, tv.features[2].conv[1][0].weight)
    assert torch.equal(body.features[0][0].weight, tv.features[0][0].weight)


# --- fine-tuning versus resuming, with a tiny FCOS ---------------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
TINY_FCOS = ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.CONV_BODY", "R-18-FPN-RETINANET",
             "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "1"]


def _tiny_fcos(num_classes, prior_prob=0.01, seed=0, extra=()):
    """(model, optimizer, scheduler) of a tiny FCOS with ``num_classes`` (background included)."""
    from fcos_core.config import load_config
    from fcos_core.modeling.detector import build_detection_model
    from fcos_core.solver import make_lr_scheduler, make_optimizer

    cfg = load_config(str(ROOT / "configs/fcos/fcos_R_50_FPN_1x.yaml"), TINY_FCOS + [
        "MODEL.FCOS.NUM_CLASSES", str(num_classes), "MODEL.FCOS.PRIOR_PROB", str(prior_prob), *extra])
    torch.manual_seed(seed)
    model = build_detection_model(cfg)
    optimizer = make_optimizer(cfg, model)
    return model, optimizer, make_lr_scheduler(cfg, optimizer)


def _trained_checkpoint(path, num_classes, iteration=500):
    """Save a tiny FCOS as the trainer does after ``iteration`` steps: model, optimizer with momentum
    buffers, scheduler, iteration and class names. Returns the model."""
    model, optimizer, scheduler = _tiny_fcos(num_classes, seed=1)
    _randomise(model, 2)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    for _ in range(iteration):
        scheduler.step()
    names = ["__background"] + [f"c{i}" for i in range(1, num_classes)]
    path.parent.mkdir(exist_ok=True)
    Checkpointer(model, optimizer, scheduler, str(path.parent), True, categories=names).save(path.stem, iteration=iteration)
    return model


def test_fine_tuning_to_another_class_count_reinitialises_only_the_classifier(tmp_path, caplog):
    src = _trained_checkpoint(tmp_path / "src" / "coco.pth", num_classes=81)
    (tmp_path / "src" / "last_checkpoint").unlink()
    model, optimizer, scheduler = _tiny_fcos(5, prior_prob=0.05)
    out = tmp_path / "out"
    out.mkdir()
    ck = DetectronCheckpointer(None, model, optimizer, scheduler, str(out), True)
    with caplog.at_level("INFO"):
        extra = ck.resume_or_load(str(tmp_path / "src" / "coco.pth"))
    assert "iteration" not in extra and extra["categories"][1] == "c1"
    assert scheduler.last_epoch == 0 and not optimizer.state  # a fresh schedule, no momentum
    source, loaded = src.state_dict(), model.state_dict()
    for key in loaded:
        if not key.startswith("rpn.head.cls_logits."):
            assert torch.equal(loaded[key], source[key]), key
    # the FCOS head's own initialisation with MODEL.FCOS.PRIOR_PROB
    bias, weight = model.rpn.head.cls_logits.bias, model.rpn.head.cls_logits.weight
    assert torch.allclose(bias, torch.full((4,), -math.log(0.95 / 0.05)))
    assert abs(weight.std().item() - 0.01) < 0.001 and weight.shape == (4, 64, 3, 3)
    log = caplog.text
    assert "Initialising from" in log and "not loaded" in log
    assert "rpn.head.cls_logits.weight (model (4, 64, 3, 3), file (80, 64, 3, 3))" in log
    assert "rpn.head.cls_logits.bias (model (4,), file (80,))" in log


def test_resume_loads_everything_and_ignores_model_weight(tmp_path, caplog):
    src = _trained_checkpoint(tmp_path / "model_0000500.pth", num_classes=5)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000500.pth"
    model, optimizer, scheduler = _tiny_fcos(5)
    ck = DetectronCheckpointer(None, model, optimizer, scheduler, str(tmp_path), True)
    with caplog.at_level("INFO"):
        extra = ck.resume_or_load("catalog://ImageNetPretrained/MSRA/R-50")  # never opened
    assert extra["iteration"] == 500 and scheduler.last_epoch == 500 and optimizer.state
    _assert_same_weights(src, model)
    assert "Resuming from" in caplog.text and "MODEL.WEIGHT catalog://ImageNetPretrained/MSRA/R-50 is ignored" in caplog.text
    # fine-tuning from the same file (no last_checkpoint): weights only
    (tmp_path / "last_checkpoint").unlink()
    model, optimizer, scheduler = _tiny_fcos(5)
    extra = DetectronCheckpointer(None, model, optimizer, scheduler, str(tmp_path), True).resume_or_load(
        str(tmp_path / "model_0000500.pth"))
    assert "iteration" not in extra and scheduler.last_epoch == 0 and not optimizer.state
    _assert_same_weights(src, model)


def test_saved_checkpoints_carry_the_class_names(tmp_path):
    model, optimizer, scheduler = _tiny_fcos(3)
    names = ["__background", "cat", "dog"]
    path = Checkpointer(model, optimizer, scheduler, str(tmp_path), True, categories=names).save("model_final", iteration=3)
    assert torch.load(path, weights_only=True)["categories"] == names
    extra = Checkpointer(_tiny_fcos(3)[0], save_dir=str(tmp_path)).load()
    assert extra["categories"] == names and extra["iteration"] == 3


@pytest.mark.parametrize("other", [
    ["MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "128"],  # every FPN and head tensor of another shape
    ["MODEL.BACKBONE.CONV_BODY", "R-50-FPN-RETINANET"],  # another depth: missing and unused keys
])
def test_fine_tuning_refuses_a_checkpoint_of_another_architecture(tmp_path, other):
    src, _, _ = _tiny_fcos(81, extra=other)
    path = tmp_path / "other.pth"
    torch.save({"model": src.state_dict()}, path)
    model, optimizer, scheduler = _tiny_fcos(5)
    ck = DetectronCheckpointer(None, model, optimizer, scheduler, str(tmp_path / "out"), True)
    with pytest.raises(RuntimeError) as info:
        ck.resume_or_load(str(path))
    msg = str(info.value)
    assert str(path) in msg and "does not fit the model" in msg
    assert "backbone." in msg  # the first bad keys are named
    assert "another architecture" in msg and "set MODEL.FCOS.NUM_CLASSES" not in msg


def test_running_a_checkpoint_of_another_class_count_says_which_number_to_set(tmp_path):
    src, _, _ = _tiny_fcos(81)
    path = tmp_path / "coco.pth"
    torch.save({"model": src.state_dict()}, path)
    with pytest.raises(RuntimeError) as info:
        DetectronCheckpointer(None, _tiny_fcos(5)[0]).load(str(path), use_latest=False)
    assert "80 classes and the model 4" in str(info.value) and "MODEL.FCOS.NUM_CLASSES 81" in str(info.value)


# --- ImageNet initialisation of the deformable (dcnv2) stages ------------------------------------

def _c2_name(key):
    """Our ResNet body key -> the Detectron blob name (the inverse of rename_c2_resnet_key), or None."""
    import re

    if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
        return None
    stem = {"stem.conv1.weight": "conv1_w", "stem.bn1.weight": "res_conv1_bn_s", "stem.bn1.bias": "res_conv1_bn_b"}
    if key in stem:
        return stem[key]
    m = re.match(r"layer(\d)\.(\d+)\.(conv|bn|downsample\.)(\d)\.(weight|bias)$", key)
    stage, block, kind, index, leaf = m.groups()
    prefix = f"res{int(stage) + 1}_{block}_"
    suffix = {"weight": "s", "bias": "b"}[leaf] if kind != "conv" and not (kind == "downsample." and index == "0") else "w"
    if kind == "downsample.":
        return prefix + ("branch1_w" if index == "0" else f"branch1_bn_{suffix}")
    branch = "branch2" + "abc"[int(index) - 1]
    return prefix + (f"{branch}_w" if kind == "conv" else f"{branch}_bn_{suffix}")


@pytest.mark.parametrize("fmt", ["torchvision", "detectron"])
def test_imagenet_weights_initialise_the_deformable_convs(tmp_path, fmt, caplog):
    import torchvision

    from fcos_core.config import load_config
    from fcos_core.modeling.detector import build_detection_model

    cfg = load_config(str(ROOT / "configs/fcos/fcos_imprv_dcnv2_R_50_FPN_1x.yaml"),
                      ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64"])
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    offsets = {k: v.clone() for k, v in model.state_dict().items() if ".conv2.offset." in k}
    assert len(offsets) == 2 * 13  # layer2..4 of an R-50: 4 + 6 + 3 deformable convs
    tv = _randomise(torchvision.models.resnet50(weights=None), 7).state_dict()
    if fmt == "torchvision":
        path = tmp_path / "resnet50.pth"
        torch.save(tv, path)
    else:
        from fcos_core.utils.imagenet_weights import torchvision_resnet_to_body

        blobs = {_c2_name(k): v.numpy() for k, v in torchvision_resnet_to_body(tv).items() if _c2_name(k)}
        path = tmp_path / "R-50.pkl"
        with open(path, "wb") as f:
            pickle.dump({"blobs": blobs}, f, protocol=2)
    with caplog.at_level("INFO"):
        DetectronCheckpointer(None, model).load(str(path), use_latest=False)
    body = model.backbone.body
    for stage in (2, 3, 4):
        for i, block in enumerate(getattr(body, f"layer{stage}")):
            assert torch.equal(block.conv2.conv.weight, tv[f"layer{stage}.{i}.conv2.weight"]), (stage, i)
    assert torch.equal(body.layer1[0].conv2.weight, tv["layer1.0.conv2.weight"])  # a plain stage
    for key, before in offsets.items():  # the offset convs keep their initialisation (zero bias)
        assert torch.equal(model.state_dict()[key], before), key
        if key.endswith("bias"):
            assert not before.any()
    assert "13 conv weights renamed for the deformable convs" in caplog.text
    with torch.no_grad():  # the body runs on a small input
        features = body(torch.rand(1, 3, 64, 64))
    assert all(torch.isfinite(f).all() for f in features)


def test_imagenet_weights_of_another_backbone_are_refused(tmp_path):
    import torchvision

    from fcos_core.config import load_config
    from fcos_core.modeling.detector import build_detection_model

    model = build_detection_model(load_config(str(ROOT / "configs/fcos/fcos_R_50_FPN_1x.yaml"), TINY_FCOS))
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(RuntimeError, match=r"mobilenet_v2.pth does not fit the backbone.*backbone\.body\.stem\.conv1\.weight"):
        DetectronCheckpointer(None, model).load(str(path), use_latest=False)
    path = tmp_path / "resnet34.pth"  # basic blocks for an R-18 with bottlenecks... and more blocks
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(RuntimeError, match=r"resnet34.pth does not fit the backbone.*layer1\.2\."):
        DetectronCheckpointer(None, model).load(str(path), use_latest=False)


@pytest.mark.parametrize("content", [b"", b"hello", None])
def test_corrupt_checkpoint_is_one_error_naming_the_file(tmp_path, content):
    path = tmp_path / "model_final.pth"
    if content is None:  # a checkpoint cut short (e.g. a copy that stopped)
        torch.save({"model": TinyDetector().state_dict()}, path)
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(RuntimeError, match=r"cannot read the checkpoint .*model_final.pth .*truncated, corrupt"):
        DetectronCheckpointer(None, TinyDetector()).load(str(path), use_latest=False)
    pkl = tmp_path / "R-50.pkl"
    pkl.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros(3)}}, protocol=2)[:20])
    with pytest.raises(RuntimeError, match=r"cannot read the weight file .*R-50.pkl"):
        DetectronCheckpointer(None, TinyDetector()).load(str(pkl), use_latest=False)


def test_resume_from_a_last_checkpoint_whose_file_is_gone_says_so(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0001000.pth")
    with pytest.raises(FileNotFoundError, match=r"last_checkpoint names .*model_0001000.pth, which does not exist"):
        Checkpointer(TinyDetector(), save_dir=str(tmp_path)).resume_or_load("")
