"""Weights by path, URL or model-zoo name: addresses, the hub cache, checksums, structural checks
and first-use pins of files with no known checksum, offline errors.

Nothing here leaves the machine: downloads come from ``file://`` URLs or an HTTP server on
127.0.0.1, and TORCH_HOME points into a temporary folder.
"""
import dataclasses
import functools
import hashlib
import http.server
import threading

import pytest
import torch

from fcos_core.config import load_config
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils import model_zoo
from fcos_core.utils.checkpoint import DetectronCheckpointer
from fcos_core.utils.model_zoo import cache_url, model_zoo_url, resolve_weight, url_filename

PAYLOAD = b"weights " * 1000


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache: the folder downloads land in."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # set_dir() would win over TORCH_HOME
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert model_zoo.cache_dir() == str(folder)
    return folder


@pytest.fixture
def server(tmp_path):
    """Base URL of an HTTP server on the loopback interface serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, "http://127.0.0.1:{}".format(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def test_model_zoo_name_resolves_to_the_original_address_and_file(hub):
    url = "https://cloudstor.aarnet.edu.au/plus/s/ZSAqNJB96hA71Yf/download#FCOS_imprv_R_50_FPN_1x.pth"
    for name in ("fcos_imprv_R_50_FPN_1x", "FCOS_imprv_R_50_FPN_1x", "FCOS_imprv_R_50_FPN_1x.pth"):
        assert model_zoo_url(name) == url
    assert url_filename(url) == "FCOS_imprv_R_50_FPN_1x.pth"
    assert model_zoo_url("fcos_R_50_FPN_1x").endswith("/dDeDPBLEAt19Xrl/download#FCOS_R_50_FPN_1x.pth")
    with pytest.raises(KeyError, match="FCOS_imprv_R_50_FPN_1x"):
        model_zoo_url("fcos_imprv_R_50_FPN_2x")
    with pytest.raises(FileNotFoundError, match="did you mean FCOS_imprv_R_50_FPN_1x"):
        resolve_weight("fcos_imprv_R_50_FPN_2x")
    assert resolve_weight("no/such/model_final.pth") == "no/such/model_final.pth"  # the loader reports it
    # a copy already in the hub cache is used without any network access
    hub.mkdir(parents=True)
    (hub / "FCOS_imprv_R_50_FPN_1x.pth").write_bytes(PAYLOAD)
    assert resolve_weight("fcos_imprv_R_50_FPN_1x") == str(hub / "FCOS_imprv_R_50_FPN_1x.pth")


def test_checkpointer_loads_model_weight_given_by_name(hub, monkeypatch):
    cfg = load_config(None, ["MODEL.BACKBONE.CONV_BODY", "R-18-FPN-RETINANET", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS",
                             "64", "MODEL.FCOS.NUM_CONVS", "1", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    source = build_detection_model(cfg)
    hub.mkdir(parents=True)
    torch.save({"model": source.state_dict()}, hub / "FCOS_R_50_FPN_1x.pth")
    torch.manual_seed(1)
    model = build_detection_model(cfg)
    DetectronCheckpointer(cfg, model).load("fcos_R_50_FPN_1x", use_latest=False)
    assert torch.equal(model.rpn.head.cls_logits.weight, source.rpn.head.cls_logits.weight)


def test_offline_error_names_the_file_and_where_to_put_it(hub, server):
    _, base = server
    url = base + "/missing/download#FCOS_R_50_FPN_1x.pth"  # 404 from the server
    with pytest.raises(FileNotFoundError) as info:
        cache_url(url)
    msg = str(info.value)
    assert url in msg and str(hub / "FCOS_R_50_FPN_1x.pth") in msg
    assert not (hub / "FCOS_R_50_FPN_1x.pth").exists()


def test_corrupted_download_is_detected_and_removed(hub, server, monkeypatch):
    root, base = server
    (root / "good.pth").write_bytes(PAYLOAD)
    good = hashlib.sha256(PAYLOAD).hexdigest()
    monkeypatch.setitem(model_zoo.KNOWN_SHA256, "good.pth", good)
    assert cache_url(base + "/good.pth") == str(hub / "good.pth")

    (root / "bad.pth").write_bytes(PAYLOAD[:-10])  # a truncated copy of the same file
    monkeypatch.setitem(model_zoo.KNOWN_SHA256, "bad.pth", good)
    with pytest.raises(RuntimeError, match="corrupted") as info:
        cache_url(base + "/bad.pth")
    assert good in str(info.value)
    assert sorted(p.name for p in hub.iterdir()) == ["good.pth"]  # no leftover, no temporary file


def test_torch_hub_style_hash_in_the_file_name_is_checked(hub, tmp_path):
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    (tmp_path / f"model-{prefix}.pth").write_bytes(PAYLOAD)
    (tmp_path / "model-0badc0de.pth").write_bytes(PAYLOAD)
    assert cache_url((tmp_path / f"model-{prefix}.pth").as_uri()) == str(hub / f"model-{prefix}.pth")
    with pytest.raises(RuntimeError, match="0badc0de"):
        resolve_weight((tmp_path / "model-0badc0de.pth").as_uri())
    assert not (hub / "model-0badc0de.pth").exists()


def test_corrupted_cached_copy_is_replaced(hub, tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(PAYLOAD)
    monkeypatch.setitem(model_zoo.KNOWN_SHA256, "w.pth", hashlib.sha256(PAYLOAD).hexdigest())
    hub.mkdir(parents=True)
    (hub / "w.pth").write_bytes(b"half a file")
    assert cache_url((tmp_path / "w.pth").as_uri()) == str(hub / "w.pth")
    assert (hub / "w.pth").read_bytes() == PAYLOAD


# --- released files have no known SHA-256: structural check and trust on first use -----------------


def _checkpoint_bytes(tmp_path, legacy=False):
    """A small PyTorch checkpoint, as the original's Checkpointer writes them, in either format."""
    torch.manual_seed(0)
    state = {"model": {"conv.weight": torch.randn(16, 8, 3, 3), "conv.bias": torch.randn(16)}, "iteration": 90000}
    path = tmp_path / ("legacy.pth" if legacy else "zip.pth")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path.read_bytes()


def _serve(tmp_path, name, data):
    """A file:// URL to ``data`` under the name ``name`` (no known SHA-256)."""
    folder = tmp_path / "www"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    assert model_zoo.expected_sha256(name) is None
    return (folder / name).as_uri()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_good_checkpoint_without_known_sum_is_accepted_and_pinned(hub, tmp_path, legacy):
    data = _checkpoint_bytes(tmp_path, legacy)
    assert data.startswith(b"PK\x03\x04") != legacy
    url = _serve(tmp_path, "FCOS_R_50_FPN_1x.pth", data)
    cached = hub / "FCOS_R_50_FPN_1x.pth"
    assert cache_url(url) == str(cached)
    assert cached.read_bytes() == data
    pin = hub / "FCOS_R_50_FPN_1x.pth.sha256"
    assert pin.read_text() == f"{hashlib.sha256(data).hexdigest()}  FCOS_R_50_FPN_1x.pth\n"  # sha256sum -c
    assert sorted(p.name for p in hub.iterdir()) == ["FCOS_R_50_FPN_1x.pth", "FCOS_R_50_FPN_1x.pth.sha256"]
    assert cache_url(url) == str(cached)  # the cached copy matches its pin


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.999, 0.5, 0.05], ids=["end", "half", "head"])
def test_truncated_checkpoint_without_known_sum_is_detected_and_removed(hub, tmp_path, legacy, keep):
    data = _checkpoint_bytes(tmp_path, legacy)
    url = _serve(tmp_path, "FCOS_R_50_FPN_1x.pth", data[:int(len(data) * keep)])
    with pytest.raises(RuntimeError, match="truncated") as info:
        resolve_weight(url)
    msg = str(info.value)
    assert url in msg and str(hub / "FCOS_R_50_FPN_1x.pth") in msg and "removed" in msg
    assert list(hub.iterdir()) == []  # no file, no pin, no temporary file


def test_corrupted_zip_member_and_non_checkpoints_are_detected(hub, tmp_path):
    data = bytearray(_checkpoint_bytes(tmp_path))
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the tensor data: the CRC-32 check catches it
    with pytest.raises(RuntimeError, match="CRC"):
        cache_url(_serve(tmp_path, "flipped.pth", bytes(data)))
    # a login or error page served in place of the file
    with pytest.raises(RuntimeError, match="not a PyTorch checkpoint nor a pickle"):
        cache_url(_serve(tmp_path, "page.pth", b"<!DOCTYPE html><html>Sign in</html>"))
    with pytest.raises(RuntimeError, match="empty"):
        cache_url(_serve(tmp_path, "empty.pth", b""))
    assert list(hub.iterdir()) == []


def test_detectron_pickle_without_known_sum_is_parsed_not_run(hub, tmp_path):
    import pickle

    import numpy as np

    blobs = {"blobs": {"conv1_w": np.ones((4, 3, 7, 7), np.float32), "res_conv1_bn_s": np.ones(4, np.float32)}}
    data = pickle.dumps(blobs, protocol=2)
    assert cache_url(_serve(tmp_path, "R-50.pkl", data)) == str(hub / "R-50.pkl")
    assert (hub / "R-50.pkl.sha256").exists()
    with pytest.raises(RuntimeError, match="truncated"):
        cache_url(_serve(tmp_path, "R-101.pkl", data[:-20]))
    assert not (hub / "R-101.pkl").exists()


def test_cached_copy_changed_after_first_use_is_downloaded_again(hub, tmp_path):
    data = _checkpoint_bytes(tmp_path)
    url = _serve(tmp_path, "FCOS_R_50_FPN_1x.pth", data)
    cached = hub / "FCOS_R_50_FPN_1x.pth"
    cache_url(url)
    cached.write_bytes(data[:1000])  # damaged on disk after the first download
    assert cache_url(url) == str(cached)
    assert cached.read_bytes() == data
    assert (hub / "FCOS_R_50_FPN_1x.pth.sha256").read_text().split()[0] == hashlib.sha256(data).hexdigest()
    # damaged again, and the server now sends a truncated copy: both are removed and reported
    cached.write_bytes(data[:1000])
    _serve(tmp_path, "FCOS_R_50_FPN_1x.pth", data[:-100])
    with pytest.raises(RuntimeError, match="truncated"):
        cache_url(url)
    assert list(hub.iterdir()) == []


def test_legacy_checkpoint_with_other_objects_is_kept_without_running_it(hub, tmp_path, caplog):
    # argparse.Namespace is not among weights_only's allowed globals: loading the file would need
    # weights_only=False, which runs code from it, so its tensor data is left unchecked (and the
    # checkpointer refuses the file itself); its pickles are still parsed to their end
    import argparse

    path = tmp_path / "odd.pth"
    torch.save({"model": {"w": torch.ones(3)}, "args": argparse.Namespace(lr=0.01)}, path,
               _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    with caplog.at_level("WARNING", logger="fcos_core.utils.model_zoo"):
        assert cache_url(_serve(tmp_path, "odd.pth", data)) == str(hub / "odd.pth")
    assert "not checked" in caplog.text and "argparse.Namespace" in caplog.text
    with pytest.raises(RuntimeError, match="truncated"):  # cut inside the pickle of the object
        cache_url(_serve(tmp_path, "odd2.pth", data[:200]))
    assert not (hub / "odd2.pth").exists()


# --- the zoo's entries: provenance, published hashes, hosts that are gone (issue 15) ---------------


def _never_download(url, dst, progress=True):
    raise AssertionError(f"no download expected, got {url}")


def test_torchvision_coco_fcos_entry_is_what_torchvision_publishes():
    from torchvision.models.detection import FCOS_ResNet50_FPN_Weights

    published = FCOS_ResNet50_FPN_Weights.COCO_V1
    entry = model_zoo.model_zoo_entry("fcos_resnet50_fpn_coco")
    assert entry is model_zoo.zoo()["fcos_resnet50_fpn_coco"] and entry.source == "torchvision"
    assert entry.url == published.url
    assert entry.ap == published.meta["_metrics"]["COCO-val2017"]["box_map"]
    assert "val2017" in entry.ap_source and "not measured here" in entry.ap_source
    assert entry.sha256 == "99b0c9b7" == model_zoo.expected_sha256(entry.filename)
    assert model_zoo.model_zoo_config("FCOS_ResNet50_FPN_COCO") == "torchvision/fcos_resnet50_fpn_coco.yaml"
    assert model_zoo.model_zoo_name("fcos_resnet50_fpn_coco-99b0c9b7.pth") == "fcos_resnet50_fpn_coco"
    assert not entry.host_gone
    # downloadable entries come first, the original's (host gone) last
    gone = [e.host_gone for e in model_zoo.zoo().values()]
    assert gone == sorted(gone) and gone[-1]


def test_mmdetection_entries_come_from_its_table_with_the_hash_in_their_names():
    from fcos_core.utils.formats.mmdet_zoo import MMDET_MODELS

    entries = [e for e in model_zoo.zoo().values() if e.source == "mmdetection"]
    assert [e.name for e in entries] == list(MMDET_MODELS)
    for entry in entries:
        model = MMDET_MODELS[entry.name]
        assert entry.url.startswith("https://download.openmmlab.com/") and entry.url.endswith(entry.filename)
        assert entry.sha256 == model.sha256_prefix == model_zoo.expected_sha256(entry.filename)
        assert (entry.ap, entry.config) == (model.box_ap, model.config) and "not measured here" in entry.ap_source
        assert model_zoo.model_zoo_name(model.v3_name.upper()) == entry.name
        assert model_zoo.published_sha256(entry.filename) == entry.sha256 and not entry.host_gone
    imprv = model_zoo.model_zoo_entry("fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco")
    assert imprv.ap == 38.7


def test_original_models_are_listed_with_their_config_and_host_gone():
    originals = [e for e in model_zoo.zoo().values() if e.source == "original (host gone)"]
    assert len(originals) == 15 and all(e.host_gone and e.sha256 == "" for e in originals)
    imprv = model_zoo.model_zoo_entry("fcos_imprv_R_50_FPN_1x")
    assert (imprv.ap, imprv.config) == (38.7, "fcos/fcos_imprv_R_50_FPN_1x.yaml")
    for entry in originals:
        assert (model_zoo.CONFIGS_DIR + "/" + entry.config) == model_zoo.get_config_file(entry.config)
        assert "minival" in entry.ap_source and "not measured here" in entry.ap_source


def test_every_zoo_config_exists():
    for entry in model_zoo.zoo().values():
        model_zoo.get_config_file(entry.config)  # FileNotFoundError naming it otherwise


def test_original_model_without_a_copy_is_not_downloaded_and_says_where_to_put_one(hub, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _never_download)
    with pytest.raises(FileNotFoundError) as info:
        resolve_weight("FCOS_imprv_R_50_FPN_1x")
    msg = str(info.value)
    cached = hub / "FCOS_imprv_R_50_FPN_1x.pth"
    assert "15 December 2023" in msg and str(cached) in msg and "fcos_resnet50_fpn_coco" in msg
    assert "MODEL.WEIGHT /path/FCOS_imprv_R_50_FPN_1x.pth" in msg
    # a configured CloudStor URL (the MobileNetV2 ImageNet file) is not asked either
    with pytest.raises(FileNotFoundError, match="CloudStor, decommissioned on 15 December 2023"):
        resolve_weight("https://cloudstor.aarnet.edu.au/plus/s/xtixKaxLWmbcyf7/download#mobilenet_v2-ecbe2b5.pth")


def test_cached_copy_that_fails_its_published_hash_offline_names_both_sums(hub, monkeypatch):
    def offline(url, dst, progress=True):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    hub.mkdir(parents=True)
    cached = hub / "fcos_resnet50_fpn_coco-99b0c9b7.pth"
    cached.write_bytes(PAYLOAD)
    with pytest.raises(FileNotFoundError) as info:
        resolve_weight("fcos_resnet50_fpn_coco")
    msg = str(info.value)
    assert hashlib.sha256(PAYLOAD).hexdigest() in msg and "99b0c9b7" in msg and str(cached) in msg
    assert "https://download.pytorch.org/models/fcos_resnet50_fpn_coco-99b0c9b7.pth" in msg
    assert not cached.exists()  # never loaded


def test_local_file_named_as_a_published_file_must_match_its_hash(tmp_path):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    for name, expected in [("fcos_resnet50_fpn_coco-99b0c9b7.pth", "99b0c9b7"), ("resnet50-0676ba61.pth", "0676ba61")]:
        path = tmp_path / name
        path.write_bytes(PAYLOAD)
        with pytest.raises(model_zoo.HashMismatchError) as info:
            resolve_weight(str(path))
        assert digest in str(info.value) and expected in str(info.value) and str(path) in str(info.value)
        assert path.exists()  # the user's file is left where it is
    # names of one's own that end in hex digits are not taken for hashes
    for name in ("model_final-20190101.pth", "mine-0badc0de.pth"):
        (tmp_path / name).write_bytes(PAYLOAD)
        assert resolve_weight(str(tmp_path / name)) == str(tmp_path / name)


# --- torchvision:// ImageNet names --------------------------------------------------------------


def test_torchvision_names_are_torchvisions_imagenet1k_v1_files():
    from torchvision.models import (
        MobileNet_V2_Weights, ResNet50_Weights, ResNet101_Weights, ResNeXt101_32X8D_Weights, ResNeXt101_64X4D_Weights,
    )

    enums = {"resnet50": ResNet50_Weights, "resnet101": ResNet101_Weights, "resnext101_32x8d": ResNeXt101_32X8D_Weights,
             "resnext101_64x4d": ResNeXt101_64X4D_Weights, "mobilenet_v2": MobileNet_V2_Weights}
    assert set(enums) == set(model_zoo.TORCHVISION_IMAGENET)
    for name, enum in enums.items():
        url = model_zoo.torchvision_imagenet_url("torchvision://" + name)
        assert url == enum.IMAGENET1K_V1.url
        assert model_zoo.published_sha256(url_filename(url)) == model_zoo.expected_sha256(url_filename(url))
    assert model_zoo.torchvision_imagenet_url("torchvision://ResNet50") == ResNet50_Weights.IMAGENET1K_V1.url
    with pytest.raises(ValueError, match="torchvision://resnet50, torchvision://resnet101"):
        resolve_weight("torchvision://resnet49")


def _serve_torchvision(tmp_path, monkeypatch, name, state, prefix=None):
    """Save ``state`` under torchvision's file name pattern with its own (or a given) hash prefix and
    point ``torchvision://<name>`` at it; returns the file."""
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    prefix = prefix or hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    served = tmp_path / "www" / f"{name}-{prefix}.pth"
    served.parent.mkdir(exist_ok=True)
    raw.rename(served)
    weights = model_zoo.TORCHVISION_IMAGENET[name]
    monkeypatch.setitem(model_zoo.TORCHVISION_IMAGENET, name, dataclasses.replace(weights, url=served.as_uri()))
    return served


def test_torchvision_resnet50_by_name_is_downloaded_checked_and_initialises_the_body(hub, tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(0)
    classifier = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        classifier.bn1.running_var.uniform_(0.5, 2.0)
    served = _serve_torchvision(tmp_path, monkeypatch, "resnet50", classifier.state_dict())
    cfg = load_config(str(model_zoo.CONFIGS_DIR + "/fcos/fcos_imprv_R_50_FPN_1x_torchvision_init.yaml"),
                      ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.WEIGHT == "torchvision://resnet50"
    model = build_detection_model(cfg)
    DetectronCheckpointer(cfg, model).load(cfg.MODEL.WEIGHT, use_latest=False)
    body = model.backbone.body
    assert torch.equal(body.stem.conv1.weight, classifier.conv1.weight)
    assert torch.equal(body.stem.bn1.running_var, classifier.bn1.running_var)
    assert torch.equal(body.layer4[2].conv3.weight, classifier.layer4[2].conv3.weight)
    assert (hub / served.name).exists()
    # a file whose SHA-256 is not the prefix in its name is refused
    (hub / served.name).unlink()
    _serve_torchvision(tmp_path, monkeypatch, "resnet50", {"fc.weight": torch.ones(2)}, prefix="0badc0de")
    with pytest.raises(model_zoo.HashMismatchError, match="0badc0de"):
        DetectronCheckpointer(cfg, build_detection_model(cfg)).load("torchvision://resnet50", use_latest=False)


def test_torchvision_weights_refuse_a_config_without_their_settings(hub, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _never_download)
    cfg = load_config(str(model_zoo.CONFIGS_DIR + "/fcos/fcos_imprv_R_50_FPN_1x.yaml"), ["MODEL.DEVICE", "cpu"])
    with pytest.raises(ValueError) as info:
        DetectronCheckpointer(cfg, None).load("torchvision://resnet50", use_latest=False)
    msg = str(info.value)
    for line in ("MODEL.RESNETS.STRIDE_IN_1X1 is True; they need False", "INPUT.TO_BGR255 is True; they need False",
                 "INPUT.PIXEL_MEAN is [102.9801, 115.9465, 122.7717]; they need [0.485, 0.456, 0.406]",
                 "INPUT.PIXEL_STD is [1.0, 1.0, 1.0]; they need [0.229, 0.224, 0.225]",
                 "catalog://ImageNetPretrained/MSRA/R-50"):
        assert line in msg
    # another backbone, another ResNeXt width; a local file recognised by its torchvision name
    with pytest.raises(ValueError, match="CONV_BODY is 'R-50-FPN-RETINANET'; these weights fit R-101-"):
        model_zoo.check_imagenet_config(cfg, "torchvision://resnet101")
    with pytest.raises(ValueError, match="MODEL.RESNETS.NUM_GROUPS is 1; they need 32"):
        model_zoo.check_imagenet_config(cfg, "/somewhere/resnext101_32x8d-8ba56ff5.pth")
    ok = load_config(str(model_zoo.CONFIGS_DIR + "/fcos/fcos_imprv_R_50_FPN_1x_torchvision_init.yaml"))
    model_zoo.check_imagenet_config(ok, "torchvision://resnet50")
    model_zoo.check_imagenet_config(cfg, "catalog://ImageNetPretrained/MSRA/R-50")  # not torchvision's: no check
