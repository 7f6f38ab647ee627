"""The ``fcos`` console command (fcos_core/cli.py) on a folder of images, and its defaults.

A tiny random FCOS (quickstart config, 64 FPN channels, one tower conv) whose classification and
centerness biases are set high, so that there is always something to draw and list.
"""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fcos_core import cli
from fcos_core.config import load_config
from fcos_core.engine.predictor import COCODemo, load_categories
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils import model_zoo

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "quickstart" / "fcos_shapes.yaml")
NAMES = ["circle", "ellipse", "square", "triangle", "star", "cross"]
TINY_OPTS = ["MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "1",
             "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160"]


def fcos_command():
    """The installed ``fcos`` script beside this interpreter (``pip install .`` puts it there)."""
    script = Path(sys.executable).parent / "fcos"
    assert script.exists(), f"{script} missing: reinstall the package (pip install --no-build-isolation -e .)"
    return [str(script)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(weights path, categories json path) of the tiny model."""
    folder = tmp_path_factory.mktemp("fcos_command")
    torch.manual_seed(0)
    model = build_detection_model(load_config(CONFIG, TINY_OPTS))
    with torch.no_grad():
        model.rpn.head.cls_logits.bias.fill_(4.0)
        model.rpn.head.centerness.bias.fill_(4.0)
    weights = folder / "tiny.pth"
    torch.save({"model": model.state_dict()}, weights)
    categories = folder / "instances.json"
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    categories.write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    return str(weights), str(categories)


def _image(height, width, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.circle(image, (width // 2, height // 2), min(height, width) // 3, (0, 200, 255), -1)
    return image


def test_fcos_on_a_folder_writes_one_annotated_image_and_one_json_per_input(tiny, tmp_path):
    weights, categories = tiny
    images = tmp_path / "images"
    images.mkdir()
    sizes = {"a.png": (120, 170), "b.jpg": (150, 110)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(images / name), _image(h, w, seed=i))
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    res = subprocess.run(
        fcos_command() + [str(images), "--config-file", CONFIG, "--weights", weights, "--output", str(out),
                          "--json", "--thresholds", "0.3", "--categories-from", categories, *TINY_OPTS],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["a.json", "a.png", "b.jpg", "b.json"]

    cfg = load_config(CONFIG, TINY_OPTS + ["MODEL.WEIGHT", weights])
    demo = COCODemo(cfg, 0.3, min_image_size=None, categories=load_categories(categories))
    for name, (h, w) in sizes.items():
        original = cv2.imread(str(images / name))
        drawn = cv2.imread(str(out / name))
        assert drawn.shape == (h, w, 3) and not np.array_equal(drawn, original)
        record = json.loads((out / (Path(name).stem + ".json")).read_text())
        assert record["image"] == str(images / name) and (record["width"], record["height"]) == (w, h)
        found = record["detections"]
        assert found and all(d["category"] == NAMES[d["label"] - 1] for d in found)
        scores = [d["score"] for d in found]
        assert min(scores) > 0.3 and scores == sorted(scores, reverse=True)
        # the same detections as the demo class in this process, in pixels of the input image
        expected = demo.select_top_predictions(demo.compute_prediction(original))
        assert len(found) == len(expected)
        np.testing.assert_allclose([d["box"] for d in found], expected.bbox.numpy(), atol=0.01)
        assert all(0 <= d["box"][0] <= d["box"][2] <= w - 1 and 0 <= d["box"][1] <= d["box"][3] <= h - 1
                   for d in found)
    assert res.stdout.count("detections") == 2


def test_fcos_names_the_classes_from_the_checkpoint(tiny, tmp_path, capsys):
    """A checkpoint as tools/train_net.py saves it ("categories") needs no --categories-from, and
    MODEL.FCOS.NUM_CLASSES 0 takes its class count."""
    state = torch.load(tiny[0], weights_only=True)
    named = tmp_path / "named.pth"
    torch.save(dict(state, categories=["__background"] + [n.title() for n in NAMES]), named)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _image(100, 120, seed=3))
    out = tmp_path / "out"
    assert cli.main([str(image), "--config-file", CONFIG, "--weights", str(named), "--output", str(out), "--json",
                     "--thresholds", "0.3", *TINY_OPTS, "MODEL.FCOS.NUM_CLASSES", "0"]) == 0
    found = json.loads((out / "a.json").read_text())["detections"]
    assert found and all(d["category"] == NAMES[d["label"] - 1].title() for d in found)
    assert "categories-from" not in capsys.readouterr().err
    # names that do not fit the model: one clear error naming the file
    wrong = tmp_path / "two.json"
    wrong.write_text(json.dumps({"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    with pytest.raises(SystemExit):
        cli.main([str(image), "--config-file", CONFIG, "--weights", str(named), "--output", str(out),
                  "--categories-from", str(wrong), *TINY_OPTS])
    assert "two.json name 2 classes but the model has 6" in capsys.readouterr().err


TORCHVISION_CONFIG = ROOT / "configs" / "torchvision" / "fcos_resnet50_fpn_coco.yaml"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp_path; returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_default_is_torchvisions_coco_fcos_with_its_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the packaged configs are found from any folder
    weights, config = cli.model_and_config(None, None)
    assert weights == cli.DEFAULT_MODEL == "fcos_resnet50_fpn_coco"
    assert model_zoo.model_zoo_entry(weights).source == "torchvision"
    assert Path(config).resolve() == TORCHVISION_CONFIG
    # a config alone keeps its MODEL.WEIGHT; another zoo name brings its own config
    assert cli.model_and_config(None, CONFIG) == (None, CONFIG)
    name, config = cli.model_and_config("FCOS_imprv_R_50_FPN_1x", None)
    assert Path(config).resolve() == ROOT / "configs" / "fcos" / "fcos_imprv_R_50_FPN_1x.yaml"
    # a local copy under the zoo file's name finds its config too; a file of one's own needs one
    local = tmp_path / "fcos_resnet50_fpn_coco-99b0c9b7.pth"
    local.write_bytes(b"x")
    assert Path(cli.model_and_config(str(local), None)[1]).resolve() == TORCHVISION_CONFIG
    with pytest.raises(ValueError, match="--config-file is needed"):
        cli.model_and_config(str(tmp_path / "model_final.pth"), None)


def test_offline_the_default_model_is_one_clear_error(tmp_path, hub, monkeypatch, capsys):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _image(64, 64, seed=0))
    monkeypatch.chdir(tmp_path)

    def offline(url, dst, progress=True):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(SystemExit) as info:
        cli.main([str(image), "--output", str(tmp_path / "out"), "MODEL.DEVICE", "cpu"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    url = "https://download.pytorch.org/models/fcos_resnet50_fpn_coco-99b0c9b7.pth"
    assert url in err and str(hub / "fcos_resnet50_fpn_coco-99b0c9b7.pth") in err and "Traceback" not in err


def test_demo_scripts_default_to_the_same_model(tmp_path, hub, monkeypatch):
    """demo/fcos_demo.py and demo/webcam.py share these arguments: no --weights / --config-file means
    torchvision's COCO FCOS, and offline that is one line naming the address and the cache path."""
    import argparse

    from fcos_core.engine.demo_cli import add_demo_arguments, demo_from_args

    parser = argparse.ArgumentParser()
    add_demo_arguments(parser, default_min_image_size=800)
    args = parser.parse_args([])
    assert (args.weights, args.config_file) == (None, None)

    def offline(url, dst, progress=True):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(SystemExit) as info:
        demo_from_args(args, ["MODEL.DEVICE", "cpu"])
    message = str(info.value.code)
    assert message.startswith("error: ") and "fcos_resnet50_fpn_coco-99b0c9b7.pth" in message
    assert str(hub / "fcos_resnet50_fpn_coco-99b0c9b7.pth") in message


def _serve_default_model(tmp_path, monkeypatch, data, prefix=None):
    """Point the default zoo entry at a file:// URL of ``data``, named ``fcos_resnet50_fpn_coco-<prefix>.pth``
    with ``prefix`` its own SHA-256 prefix unless given; returns the served file."""
    prefix = prefix or hashlib.sha256(data).hexdigest()[:8]
    served = tmp_path / "www" / f"fcos_resnet50_fpn_coco-{prefix}.pth"
    served.parent.mkdir(exist_ok=True)
    served.write_bytes(data)
    entries = dict(model_zoo.zoo())
    entries[cli.DEFAULT_MODEL] = dataclasses.replace(entries[cli.DEFAULT_MODEL], url=served.as_uri(), sha256=prefix)
    monkeypatch.setattr(model_zoo, "zoo", lambda: entries)
    return served


def test_default_model_is_downloaded_hash_checked_converted_and_run(tmp_path, hub, monkeypatch):
    """torchvision's own state dict (random weights; person's logit raised), served under a name with its
    own hash prefix, goes through the download, the hash check and the conversion, and its "person"
    class comes out under that name."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    with torch.no_grad():
        tv.head.classification_head.cls_logits.bias[1] = 3.0  # COCO category 1, "person"
    raw = tmp_path / "raw.pth"
    torch.save(tv.state_dict(), raw)
    served = _serve_default_model(tmp_path, monkeypatch, raw.read_bytes())
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _image(96, 128, seed=1))
    out = tmp_path / "out"
    assert cli.main([str(image), "--output", str(out), "--json", "--thresholds", "0.3", "--min-image-size", "96",
                     "MODEL.DEVICE", "cpu", "INPUT.MAX_SIZE_TEST", "160"]) == 0
    assert (hub / served.name).read_bytes() == raw.read_bytes()
    found = json.loads((out / "a.json").read_text())["detections"]
    assert found and {d["category"] for d in found} == {"person"}
    assert all(0 <= d["box"][0] <= d["box"][2] <= 128 and 0 <= d["box"][1] <= d["box"][3] <= 96 for d in found)


def test_default_model_whose_hash_does_not_match_its_name_is_refused(tmp_path, hub, monkeypatch, capsys):
    data = b"not the published file " * 100
    published_zoo = model_zoo.zoo
    _serve_default_model(tmp_path, monkeypatch, data, prefix="0badc0de")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), _image(64, 64, seed=0))
    with pytest.raises(SystemExit) as info:
        cli.main([str(image), "--output", str(tmp_path / "out"), "MODEL.DEVICE", "cpu"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "0badc0de" in err and hashlib.sha256(data).hexdigest() in err and "Traceback" not in err
    assert not hub.exists() or not any(hub.iterdir())  # nothing kept, nothing loaded
    # the same file given by path under the published name: refused, naming both, left in place
    local = tmp_path / "fcos_resnet50_fpn_coco-99b0c9b7.pth"
    local.write_bytes(data)
    monkeypatch.setattr(model_zoo, "zoo", published_zoo)
    with pytest.raises(SystemExit):
        cli.main([str(image), "--weights", str(local), "--output", str(tmp_path / "out"), "MODEL.DEVICE", "cpu"])
    err = capsys.readouterr().err
    assert "99b0c9b7" in err and hashlib.sha256(data).hexdigest() in err and str(local) in err and local.exists()


def test_missing_input_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([str(tmp_path / "nothing.png"), "--weights", "w.pth", "--config-file", CONFIG])
    assert info.value.code == 2 and "nothing.png" in capsys.readouterr().err
