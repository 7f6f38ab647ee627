"""Weights by path, URL or model-zoo name: addresses, the hub cache, checksums, structural checks
and first-use pins of files with no known checksum, offline errors.

Nothing here leaves the machine: downloads come from ``file://`` URLs or an HTTP server on
127.0.0.1, and TORCH_HOME points into a temporary folder.
"""
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
