"""The embedded shapes generator: determinism, coverage, COCO layout, atomic generation."""
import hashlib
import json
import os

import numpy as np
import pytest

from fcos_core.data.datasets import shapes


def _digest(folder):
    """sha256 over every file's relative path and bytes."""
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _digest(os.path.dirname(shapes.generate_shapes_dataset(str(tmp_path / "a"), 6, seed=3)[1]))
    b = _digest(os.path.dirname(shapes.generate_shapes_dataset(str(tmp_path / "b"), 6, seed=3)[1]))
    c = _digest(os.path.dirname(shapes.generate_shapes_dataset(str(tmp_path / "c"), 6, seed=4)[1]))
    assert a == b
    assert a != c


def test_coco_layout_and_boxes_inside_images(tmp_path):
    img_dir, ann_file = shapes.generate_shapes_dataset(str(tmp_path / "s"), 8, seed=0)
    with open(ann_file) as f:
        data = json.load(f)
    assert [c["name"] for c in data["categories"]] == list(shapes.CATEGORIES)
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5, 6]
    assert data["info"]["seed"] == 0 and data["info"]["num_images"] == 8
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    assert len(sizes) == 8 and all(os.path.isfile(os.path.join(img_dir, im["file_name"])) for im in data["images"])
    for w, h in sizes.values():
        assert 192 <= min(w, h) <= 320 and 0.55 <= w / h <= 1.75
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        assert ann["iscrowd"] == 0 and ann["area"] == w * h and "segmentation" not in ann
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height and w >= 1 and h >= 1


def test_covers_all_classes_and_small_to_large_boxes():
    max_sides, classes = [], set()
    for index in range(100):
        _, anns = shapes.render_shapes_image(seed=1, index=index)
        for category_id, (_, _, w, h) in anns:
            classes.add(category_id)
            max_sides.append(max(w, h))
    max_sides = np.array(max_sides)
    assert classes == {1, 2, 3, 4, 5, 6}
    assert (max_sides < 16).any() and (max_sides > 256).any()
    # every octave between 8 and 256 px is populated (FPN levels P3..P6 at native resolution)
    counts, _ = np.histogram(max_sides, bins=[8, 16, 32, 64, 128, 256])
    assert (counts > 0).all()


def test_boxes_are_tight_on_drawn_shape():
    # a single shape on a flat background: its annotation is the box of the changed pixels
    rng = np.random.default_rng(0)
    shape = shapes._sample_shape(rng, 100, 80, 40)
    canvas = np.zeros((80, 100, 3), np.uint8)
    shapes._draw_shape(canvas, shape, (255, 255, 255))
    ys, xs = np.nonzero(canvas[..., 0])
    mask = np.zeros((80, 100), np.uint8)
    shapes._draw_shape(mask, shape, 1)
    (_, box), = shapes._visible_annotations([(1, mask)])
    assert box == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_occluded_shapes_are_not_annotated():
    bottom = np.zeros((50, 50), np.uint8)
    bottom[10:20, 10:20] = 1
    top = np.zeros((50, 50), np.uint8)
    top[10:20, 10:18] = 1  # covers 80% of the bottom shape
    kept = shapes._visible_annotations([(1, bottom), (2, top)])
    assert [c for c, _ in kept] == [2]
    top[:] = 0
    top[10:20, 10:14] = 1  # covers 40%
    assert [c for c, _ in shapes._visible_annotations([(1, bottom), (2, top)])] == [1, 2]


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    def broken(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "_coco_json", broken)
    with pytest.raises(KeyboardInterrupt):
        shapes.generate_shapes_dataset(str(tmp_path / "s"), 2, seed=0)
    assert os.listdir(tmp_path) == []


def test_ensure_reuses_and_regenerates(tmp_path, caplog):
    out = str(tmp_path / "s")
    _, ann_file = shapes.ensure_shapes_dataset(out, 2, seed=5)
    mtime = os.path.getmtime(ann_file)
    assert shapes.ensure_shapes_dataset(out, 2, seed=5)[1] == ann_file
    assert os.path.getmtime(ann_file) == mtime
    shapes.ensure_shapes_dataset(out, 3, seed=5)
    with open(ann_file) as f:
        assert len(json.load(f)["images"]) == 3
    assert "generating it again" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["s"]


def test_refuses_existing_folder(tmp_path):
    with pytest.raises(FileExistsError):
        shapes.generate_shapes_dataset(str(tmp_path), 1, seed=0)


def test_shapes_dataset_writes_its_split_once_under_a_lock(tmp_path, monkeypatch):
    """The catalog only names the split; the dataset class writes it on first use (once: a second
    instance reads the same files) and holds the lock file beside the folder while it does."""
    from fcos_core.config.paths_catalog import DatasetCatalog
    from fcos_core.data.datasets import ShapesDataset
    from fcos_core.data.datasets import embedded

    monkeypatch.setenv("FCOS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FCOS_SHAPES_NUM_IMAGES", "3")
    entry = DatasetCatalog.get("shapes_val")
    assert entry["factory"] == "ShapesDataset" and not (tmp_path / "shapes").exists()
    locks = []
    real_lock = embedded.file_lock
    monkeypatch.setattr(embedded, "file_lock", lambda p: locks.append(p) or real_lock(p))
    first = ShapesDataset(remove_images_without_annotations=False, **entry["args"])
    mtime = (tmp_path / "shapes" / "val" / "instances.json").stat().st_mtime_ns
    second = ShapesDataset(remove_images_without_annotations=False, **entry["args"])
    assert len(first) == len(second) == 3
    assert (tmp_path / "shapes" / "val" / "instances.json").stat().st_mtime_ns == mtime
    assert locks == [str(tmp_path / "shapes" / "val") + ".lock"] * 2
