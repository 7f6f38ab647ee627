"""The embedded shapes generator: determinism, coverage, COCO layout, atomic generation; the folder
handling (write, reuse, regenerate, refuse) for both renderers, which share it."""
import json
import os
import re

import numpy as np
import pytest

from fcos_core.data.datasets import shapes, shapes_variant

# both renderers write their folders with shapes.write_coco_dataset / ensure_coco_dataset:
# name -> (generate, ensure, image file extension)
RENDERERS = {"shapes": (shapes.generate_shapes_dataset, shapes.ensure_shapes_dataset, ".png"),
             "variant": (shapes_variant.generate_variant_dataset, shapes_variant.ensure_variant_dataset, ".jpg")}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, folder_digest):
    a = folder_digest(os.path.dirname(shapes.generate_shapes_dataset(str(tmp_path / "a"), 6, seed=3)[1]))
    b = folder_digest(os.path.dirname(shapes.generate_shapes_dataset(str(tmp_path / "b"), 6, seed=3)[1]))
    c = folder_digest(os.path.dirname(shapes.generate_shapes_dataset(str(tmp_path / "c"), 6, seed=4)[1]))
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


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_ensure_reuses_and_regenerates(tmp_path, caplog, name):
    ensure = RENDERERS[name][1]
    out = str(tmp_path / "s")
    _, ann_file = ensure(out, 2, seed=5)
    mtime = os.path.getmtime(ann_file)
    assert ensure(out, 2, seed=5)[1] == ann_file
    assert os.path.getmtime(ann_file) == mtime
    ensure(out, 3, seed=5)
    with open(ann_file) as f:
        assert len(json.load(f)["images"]) == 3
    assert "generating it again" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["s"]


@pytest.mark.parametrize("name, other", [("shapes", "variant"), ("variant", "shapes")])
def test_ensure_replaces_the_other_renderers_folder_of_the_same_seed_and_count(tmp_path, caplog, name, other):
    out = str(tmp_path / "s")
    RENDERERS[other][0](out, 2, seed=5)
    img_dir, _ = RENDERERS[name][1](out, 2, seed=5)
    assert "generating it again" in caplog.text
    assert sorted(os.listdir(img_dir)) == ["000000" + RENDERERS[name][2], "000001" + RENDERERS[name][2]]


def test_write_coco_dataset_bookkeeping_for_any_renderer(tmp_path):
    """The generic writer: files named by the renderer, image ids from 1, annotation ids running
    across images, area = w * h, info with num_images; the renderer's bytes written as they are."""
    def render_one(index):
        return b"file %d" % index, "f{}.bin".format(index), (10 + index, 20), [(2, [1, 2, 3, 4])] * (index + 1)

    img_dir, ann_file = shapes.write_coco_dataset(str(tmp_path / "d"), 2, render_one, {"seed": 9}, "test")
    with open(ann_file) as f:
        data = json.load(f)
    assert data["info"] == {"seed": 9, "num_images": 2}
    assert data["images"] == [{"id": 1, "file_name": "f0.bin", "height": 20, "width": 10},
                              {"id": 2, "file_name": "f1.bin", "height": 20, "width": 11}]
    assert [(a["id"], a["image_id"], a["area"]) for a in data["annotations"]] == [(1, 1, 12), (2, 2, 12), (3, 2, 12)]
    with open(os.path.join(img_dir, "f1.bin"), "rb") as f:
        assert f.read() == b"file 1"


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_refuses_existing_folder_and_no_images(tmp_path, name):
    generate = RENDERERS[name][0]
    with pytest.raises(FileExistsError, match=re.escape(str(tmp_path))):
        generate(str(tmp_path), 1, seed=0)
    with pytest.raises(ValueError, match="num_images"):
        generate(str(tmp_path / "none"), 0, seed=0)


def test_shapes_dataset_writes_its_split_once_under_a_lock(tmp_path, shapes_split_locks):
    """The catalog only names the split; the dataset class writes it on first use (once: a second
    instance reads the same files) and holds the lock file beside the folder while it does."""
    from fcos_core.config.paths_catalog import DatasetCatalog
    from fcos_core.data.datasets import ShapesDataset

    entry = DatasetCatalog.get("shapes_val")
    assert entry["factory"] == "ShapesDataset" and not (tmp_path / "shapes").exists()
    first = ShapesDataset(remove_images_without_annotations=False, **entry["args"])
    mtime = (tmp_path / "shapes" / "val" / "instances.json").stat().st_mtime_ns
    second = ShapesDataset(remove_images_without_annotations=False, **entry["args"])
    assert len(first) == len(second) == 3
    assert (tmp_path / "shapes" / "val" / "instances.json").stat().st_mtime_ns == mtime
    assert shapes_split_locks == [str(tmp_path / "shapes" / "val") + ".lock"] * 2
