"""A plain (non-editable) wheel: built with ``pip wheel --no-build-isolation --no-deps .``, installed
into a fresh virtual environment, it runs the ``fcos`` command with its packaged configs.

The wheel is built once per session from a copy of the work tree in tmp_path (building in the tree
itself would write build/ and *.egg-info there, and setuptools puts whatever a reused build/lib
still holds into the wheel). The fresh environment sees this interpreter's third-party packages
(torch is several GB: it is not installed twice) through a ``.pth`` file naming their
site-packages folder; ``.pth`` files inside that folder are not processed, so the editable install
of fcos_core (its import finder) is not active there and ``import fcos_core`` finds the wheel's
files. The wheel goes in with ``pip install --no-deps --ignore-installed`` (nothing outside the
new environment is uninstalled).
"""
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fcos_core.config import load_config
from fcos_core.engine.predictor import COCODemo
from fcos_core.modeling.detector import build_detection_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "quickstart/fcos_shapes.yaml"  # relative: found under the installed package's configs/
NAMES = ["circle", "ellipse", "square", "triangle", "star", "cross"]
TINY_OPTS = ["MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "1",
             "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160"]
# the work tree's entries that are not part of a fresh clone (.gitignore) and are not copied
NOT_COPIED = {".git", ".venv", "build", "output", "datasets", ".pytest_cache", ".whl", ".gl"}
BUILD_TIMEOUT_S = 900


def _run(cmd, timeout, **kwargs):
    """Run ``cmd``; the CompletedProcess (text output captured)."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)


def _copy_tree(dest):
    """The work tree as a fresh clone would have it (plus untracked files), without build outputs."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info")
    dest.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in NOT_COPIED or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, dest / entry.name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(entry, dest / entry.name, follow_symlinks=False)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """Path of the wheel built from a copy of the work tree (CPU kernels only: CUDA_VISIBLE_DEVICES
    is emptied, so a GPU machine does not spend minutes on CUDA kernels that .ci/run compiles anyway)."""
    base = tmp_path_factory.mktemp("wheel")
    src, dist = base / "src", base / "dist"
    _copy_tree(src)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", FORCE_CUDA="0", MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    start = time.time()
    res = _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                "-w", dist, src], BUILD_TIMEOUT_S, cwd=str(base), env=env)
    wheels = sorted(dist.glob("fcos_core-*.whl"))
    if res.returncode != 0 or len(wheels) != 1:
        pytest.fail("pip wheel --no-build-isolation --no-deps . failed (exit {}, wheels {}); it needs no "
                    "network, only setuptools, wheel, ninja and torch in this environment:\n{}".format(
                        res.returncode, [w.name for w in wheels], (res.stdout + res.stderr)[-4000:]))
    print("wheel built in {:.0f} s: {}".format(time.time() - start, wheels[0].name))
    return wheels[0]


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory):
    """A fresh virtual environment with the wheel installed; returns its folder."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    res = _run([sys.executable, "-m", "venv", "--without-pip", folder], 300)
    assert res.returncode == 0, res.stderr
    (purelib,) = (folder / "lib").glob("python*/site-packages")
    # this interpreter's third-party packages (torch, numpy, pip ...), after the venv's own
    (purelib / "_third_party.pth").write_text("".join(p + "\n" for p in site.getsitepackages()))
    res = _run([folder / "bin" / "python", "-m", "pip", "install", "--no-deps", "--ignore-installed",
                "--no-index", wheel], 600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return folder


def _site_packages(venv):
    (purelib,) = (venv / "lib").glob("python*/site-packages")
    return purelib


def test_wheel_holds_the_package_configs_and_extension_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n[len("fcos_core/configs/"):] for n in names if n.startswith("fcos_core/configs/")}
    in_tree = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").glob("*/*.yaml")}
    assert packaged == in_tree
    assert {p.split("/")[0] for p in packaged} >= {"fcos", "torchvision", "mmdetection", "quickstart"}
    with zipfile.ZipFile(wheel) as z:
        for rel in sorted(packaged):
            assert z.read("fcos_core/configs/" + rel) == (ROOT / "configs" / rel).read_bytes(), rel
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "fcos = fcos_core.cli:main" in z.read(entry_points).decode()
    assert [n for n in names if n.startswith("fcos_core/_C.") and n.endswith(".so")], "no compiled fcos_core._C"
    tops = {n.split("/")[0] for n in names}
    assert all(t == "fcos_core" or t.startswith("fcos_core-") for t in tops), tops
    assert not [n for n in names if "/tests/" in n or "/tools/" in n or n.endswith((".cpp", ".cu", ".h"))]


def test_fresh_venv_imports_the_wheel_not_the_work_tree(venv, tmp_path):
    code = ("import torch, fcos_core, fcos_core._C, fcos_core.utils.model_zoo as z;"
            "print(fcos_core.__file__); print(fcos_core._C.__file__); print(z.get_config_file({!r}))".format(CONFIG))
    res = _run([venv / "bin" / "python", "-c", code], 300, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    package = _site_packages(venv) / "fcos_core"
    init, ext, config = [Path(line) for line in res.stdout.split()]
    assert init == package / "__init__.py" and ext.parent == package
    assert config.resolve() == (package / "configs" / CONFIG).resolve()
    assert ROOT not in config.resolve().parents and ROOT not in ext.resolve().parents


def _installed_backends():
    """"pytorch" and the ONNX runtimes importable here (the fresh venv sees the same packages)."""
    found = ["pytorch"]
    if importlib.util.find_spec("onnx"):
        found += [b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b)]
    return found


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(weights path, image path) of a tiny random quickstart FCOS whose classification and
    centerness biases are high (so that there are detections), saved with its class names."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = build_detection_model(load_config(str(ROOT / "configs" / CONFIG), TINY_OPTS))
    with torch.no_grad():
        model.rpn.head.cls_logits.bias.fill_(4.0)
        model.rpn.head.centerness.bias.fill_(4.0)
    weights = folder / "tiny.pth"
    torch.save({"model": model.state_dict(), "categories": ["__background"] + NAMES}, weights)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 170, 3), dtype=np.uint8)
    cv2.circle(image, (85, 60), 40, (0, 200, 255), -1)
    cv2.imwrite(str(folder / "img.png"), image)
    return weights, folder / "img.png"


@pytest.mark.parametrize("backend", _installed_backends())
def test_installed_fcos_command_runs_the_packaged_config(venv, tiny, tmp_path, backend):
    """``fcos img.png --config-file quickstart/fcos_shapes.yaml ... TEST.BACKEND <backend>`` from a
    folder outside the repository, on every backend installed (the ONNX ones export on first use)."""
    weights, image = tiny
    shutil.copy(image, tmp_path / "img.png")
    res = _run([venv / "bin" / "fcos", "img.png", "--config-file", CONFIG, "--weights", weights,
                "--output", "out", "--json", "MODEL.DEVICE", "cpu", *TINY_OPTS, "TEST.BACKEND", backend,
                "TEST.ONNX_CACHE_DIR", tmp_path / "onnx_cache"], 600, cwd=str(tmp_path))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["img.json", "img.png"]
    # the backend asked for ran: the ONNX ones exported the graph into the cache folder, PyTorch did not
    exported = list((tmp_path / "onnx_cache").rglob("*.onnx"))
    assert bool(exported) == (backend != "pytorch"), exported
    record = json.loads((tmp_path / "out" / "img.json").read_text())
    assert (record["width"], record["height"]) == (170, 120)
    found = record["detections"]
    assert found and all(d["category"] == NAMES[d["label"] - 1] for d in found)
    scores = [d["score"] for d in found]
    assert min(scores) > 0.5 and scores == sorted(scores, reverse=True)  # 0.5: the default threshold
    # the same detections as the work tree's PyTorch model in this process (the packaged config is
    # the work tree's, byte for byte: test_wheel_holds_the_package_configs_and_extension_only), within
    # the export parity tolerances (tests/export) plus the json's rounding (boxes to 0.01 px)
    cfg = load_config(str(ROOT / "configs" / CONFIG), TINY_OPTS + ["MODEL.WEIGHT", str(weights)])
    demo = COCODemo(cfg, 0.5, min_image_size=None)
    original = cv2.imread(str(image))
    expected = demo.select_top_predictions(demo.compute_prediction(original))
    assert [d["label"] for d in found] == expected.get_field("labels").tolist()
    np.testing.assert_allclose(scores, expected.get_field("scores").numpy(), atol=1e-4)
    np.testing.assert_allclose([d["box"] for d in found], expected.bbox.numpy(), atol=0.01)
