"""fcos_core.benchmark.loader: the two pipelines it compares give the same tensors (so the comparison is
fair), and its parts count and report what they should. Not a timing test: nothing here asserts speed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from fcos_core.benchmark import loader as L
from fcos_core.benchmark.loader_data import RECORDS, make_loader_jpegs
from fcos_core.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory):
    """Two JPEGs of COCO's size (640 x 480) and their records."""
    return make_loader_jpegs(str(tmp_path_factory.mktemp("jpegs")), 2)


@pytest.fixture(scope="module")
def cfg():
    return load_config(str(ROOT / L.DEFAULT_CONFIG))


def test_jpegs_are_coco_sized_seeded_and_reused(tmp_path):
    records = make_loader_jpegs(str(tmp_path), 3, width=64, height=48, seed=1)
    assert len(records) == 3
    for r in records:
        with Image.open(r["file_name"]) as im:
            assert im.format == "JPEG" and im.size == (64, 48) and im.mode == "RGB"
        assert 2 <= len(r["boxes"]) <= 12 and len(r["labels"]) == len(r["boxes"])
        assert all(0 <= x1 < x2 <= 63 and 0 <= y1 < y2 <= 47 for x1, y1, x2, y2 in r["boxes"])
        assert all(1 <= c <= 80 for c in r["labels"])
    stamp = os.path.getmtime(records[0]["file_name"])
    assert make_loader_jpegs(str(tmp_path), 3, width=64, height=48, seed=1) == records  # reused
    assert os.path.getmtime(records[0]["file_name"]) == stamp
    other = make_loader_jpegs(str(tmp_path), 3, width=64, height=48, seed=2)  # other options: remade
    assert other != records
    assert json.loads((tmp_path / RECORDS).read_text())["params"]["seed"] == 2


@pytest.mark.parametrize("backend", ["pil", "tensor"])
@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_ours_and_the_peer_make_the_same_tensors(cfg, coco_like, flip, backend):
    ours, peer = L.make_samples(L._with(cfg, "RESIZE_BACKEND", backend), flip_prob=flip)
    for record in coco_like:
        image, target = ours(record)
        theirs, their_target = peer(record)
        assert image.shape == theirs.shape == (3, 800, 1066)  # 480 -> 800, 640 * 800 / 480 -> 1066
        assert image.dtype == theirs.dtype == torch.float32
        diff = (image - L.peer_in_our_channels(theirs, cfg.INPUT.TO_BGR255)).abs()
        # BGR 0-255 units: PIL's resize rounds to uint8 (ours), torchvision's interpolates floats
        assert diff.max() <= 1.0 and diff.mean() <= 0.5
        boxes = their_target["boxes"].as_subclass(torch.Tensor)
        # flipped boxes differ by the original's pixel-inclusive convention (x' = W - 1 - x) only
        torch.testing.assert_close(target.bbox, boxes, atol=1e-3 + flip * 1.01, rtol=0)
        assert torch.equal(target.get_field("labels"), their_target["labels"])
        assert target.size == (1066, 800)


def test_the_peer_is_torchvisions_pipeline(cfg):
    _, peer = L.make_samples(cfg)
    names = [type(t).__name__ for t in peer.transforms.transforms]
    assert names == ["ToImage", "RandomHorizontalFlip", "ToDtype"]
    assert (peer.min_size, peer.max_size) == (800, 1333)
    # PIXEL_MEAN in BGR 0-255 -> RGB 0-1
    assert peer.mean == pytest.approx([v / 255 for v in cfg.INPUT.PIXEL_MEAN[::-1]])


def test_in_process_and_stages_report_every_pipeline(cfg, coco_like):
    ours = L.make_samples(cfg)[0]
    timed = L.pipelines(cfg)
    assert list(timed) == ["ours", "peer", "ours_resize_backend_tensor", "ours_resize_style_torchvision"]
    assert timed["ours_resize_backend_tensor"].transforms.transforms[0].backend == "tensor"
    assert type(timed["ours_resize_style_torchvision"].transforms.transforms[-1]).__name__ == "TensorResize"
    out = L.in_process(timed, coco_like, rounds=2, warmup=0, per_round=1)
    for name in timed:
        assert len(out[name]["times"]) == 2 and out[name]["images_per_s"] > 0
        assert out[name]["ms_per_image"] == pytest.approx(1e3 / out[name]["images_per_s"])
    assert out["ratio_time_ours_over_peer"] > 0
    stages = L.stage_times(ours, coco_like[:1], repeat=1)
    assert list(stages) == ["read_image", "0.Resize", "1.RandomHorizontalFlip", "2.ToTensor", "3.Normalize"]


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_counts_the_images_after_each_workers_first_batch(tmp_path, cfg, workers):
    records = make_loader_jpegs(str(tmp_path), 2, width=64, height=48)
    small = load_config(str(ROOT / L.DEFAULT_CONFIG), ["INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MAX_SIZE_TRAIN", 64])
    ours, _ = L.make_samples(small)
    dataset = L.RecordDataset(records, ours, length=10)
    assert len(dataset) == 10 and dataset[7][2] == 7
    row = L.through_dataloader(dataset, L.peer_collate, workers, batch_size=2)
    assert row["images"] == 10 - 2 * max(workers, 1)
    assert row["images_per_s_per_worker"] == pytest.approx(row["images_per_s"] / max(workers, 1))


def test_command_line_writes_the_tables(tmp_path):
    out = tmp_path / "loader.json"
    cmd = [sys.executable, "-m", "fcos_core.benchmark.loader", "--images-dir", str(tmp_path / "jpegs"),
           "--count", "2", "--rounds", "1", "--warmup", "0", "--per-round", "1", "--workers", "1",
           "--loader-images", "6", "--json", str(out), "--markdown", str(tmp_path / "loader.md")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [(r["pipeline"], r["workers"], r["images"]) for r in result["dataloader"]] == [
        ("ours", 1, 4), ("peer", 1, 4), ("ours_resize_backend_tensor", 1, 4)]
    assert result["info"]["cpu"] and "fcos_core.benchmark.loader" in result["info"]["command"]
    text = (tmp_path / "loader.md").read_text()
    assert "Time ratio ours / peer" in text and "| ours | 1 | 2 | 4 |" in text
    assert "| ours_resize_style_torchvision |" in text  # the existing key's pipeline, for reference
    assert list(result["alternatives"]) == ["decode: PIL (Image.open, load)", "decode: torchvision.io.decode_jpeg",
                                            "resize: PIL bilinear", "resize: uint8 tensor interpolate"]
    assert result["alternatives_size"] == [800, 1066] and all(v > 0 for v in result["alternatives"].values())
    assert "NOT met (n/a)" in text  # no 4-worker row was measured


def test_row_of_tools_benchmark_data(tmp_path):
    out = tmp_path / "data.json"
    cmd = [sys.executable, str(ROOT / "tools" / "benchmark_data.py"), "--only", "loader", "--loader-images-dir",
           str(tmp_path / "jpegs"), "--loader-count", "2", "--loader-rounds", "1", "--loader-workers", "0",
           "--loader-dataloader-images", "6", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]["loader"]
    assert [(r["pipeline"], r["workers"]) for r in rows] == [
        ("ours", ""), ("peer", ""), ("ours_resize_backend_tensor", ""), ("ours_resize_style_torchvision", ""),
        ("ours", 0), ("peer", 0), ("ours_resize_backend_tensor", 0)]
    assert rows[1]["time_over_peer"] == 1.0 and all(r["images_per_s"] > 0 for r in rows)
    assert "Loader throughput" in proc.stdout
