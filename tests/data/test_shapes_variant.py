"""The second shapes renderer: determinism, JPEG files, tight boxes, same categories as the first
renderer, built on first use from the catalog, and evaluated with the same class ids. Its folder
handling (shapes.write_coco_dataset / ensure_coco_dataset) is tested in test_shapes_dataset.py."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from fcos_core.data.datasets import shapes, shapes_variant


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, folder_digest):
    folders = [os.path.dirname(shapes_variant.generate_variant_dataset(str(tmp_path / name), 4, seed)[1])
               for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    a, b, c = (folder_digest(folder) for folder in folders)
    assert a == b and a != c


def test_jpeg_files_coco_layout_and_categories_of_the_first_renderer(tmp_path):
    img_dir, ann_file = shapes_variant.generate_variant_dataset(str(tmp_path / "v"), 6, seed=0)
    _, first_ann = shapes.generate_shapes_dataset(str(tmp_path / "s"), 1, seed=0)
    with open(ann_file) as f:
        data = json.load(f)
    with open(first_ann) as f:
        assert data["categories"] == json.load(f)["categories"]
    assert data["info"]["renderer"] == "variant" and data["info"]["seed"] == 0
    for image in data["images"]:
        path = os.path.join(img_dir, image["file_name"])
        with open(path, "rb") as f:
            assert image["file_name"].endswith(".jpg") and f.read(3) == b"\xff\xd8\xff"  # JPEG SOI marker
        decoded = cv2.imread(path)
        assert decoded.shape[:2] == (image["height"], image["width"])
        assert 192 <= min(decoded.shape[:2]) <= 320
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    assert len(data["annotations"]) >= 6
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert ann["iscrowd"] == 0 and ann["area"] == w * h and 1 <= ann["category_id"] <= 6
        assert x >= 0 and y >= 0 and x + w <= sizes[ann["image_id"]][0] and y + h <= sizes[ann["image_id"]][1]


def test_boxes_are_tight_on_each_shapes_pixels():
    classes = set()
    for index in range(10):
        rendered = shapes_variant.render_variant_image(seed=5, index=index)
        assert len(rendered["masks"]) == len(rendered["annotations"]) > 0
        for (category_id, (x, y, w, h)), mask in zip(rendered["annotations"], rendered["masks"]):
            classes.add(category_id)
            ys, xs = np.nonzero(mask)
            assert mask.shape == (rendered["height"], rendered["width"])
            # every half-covered pixel inside the box, and the box touches them on all four sides
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x, y, x + w, y + h]
    assert len(classes) >= 4


def test_anti_aliased_edges_and_degraded_pixels():
    """A lone filled shape drawn with LINE_AA has partly covered pixels (the first renderer has none);
    decoded images carry noise (no large perfectly flat areas as in the first renderer's fills)."""
    rng = np.random.default_rng(0)
    shape = shapes._sample_shape(rng, 100, 80, 40)
    shape["filled"] = True
    coverage = shapes_variant._coverage(shape, 80, 100)
    assert ((coverage > 0) & (coverage < 255)).any() and (coverage == 255).any()
    rendered = shapes_variant.render_variant_image(seed=1, index=0)
    image = cv2.imdecode(np.frombuffer(rendered["jpeg"], np.uint8), cv2.IMREAD_COLOR)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 1000


def test_catalog_builds_the_variant_on_first_use_with_the_class_ids_of_shapes_val(tmp_path, shapes_split_locks,
                                                                                   caplog):
    from fcos_core.config.paths_catalog import DatasetCatalog
    from fcos_core.data.datasets import ShapesDataset, ShapesVariantDataset

    entry = DatasetCatalog.get("shapes_val_variant")
    assert entry["factory"] == "ShapesVariantDataset" and entry["args"]["seed"] == 3
    assert "shapes_val_variant" in DatasetCatalog.names() and not (tmp_path / "shapes").exists()
    variant = ShapesVariantDataset(remove_images_without_annotations=False, **entry["args"])
    assert shapes_split_locks == [str(tmp_path / "shapes" / "val_variant") + ".lock"] and len(variant) == 3
    first = ShapesDataset(remove_images_without_annotations=False, **DatasetCatalog.get("shapes_val")["args"])
    assert variant.class_names == first.class_names
    assert variant.json_category_id_to_contiguous_id == first.json_category_id_to_contiguous_id
    image, target, _ = variant[0]
    assert image.mode == "RGB" and len(target) > 0
    assert "evaluation only" not in caplog.text
    ShapesVariantDataset(remove_images_without_annotations=True, **entry["args"])  # as a training set
    assert "evaluation only" in caplog.text


def _predictions_from_ground_truth(dataset, label_shift=0):
    """One BoxList per image: its ground truth as detections (score 1), labels shifted by label_shift."""
    from fcos_core.structures.bounding_box import BoxList

    predictions = []
    for index in range(len(dataset)):
        _, target, _ = dataset[index]
        labels = (target.get_field("labels") - 1 + label_shift) % 6 + 1
        prediction = BoxList(target.bbox.clone(), target.size, mode=target.mode)
        prediction.add_field("scores", torch.ones(len(target)))
        prediction.add_field("labels", labels)
        predictions.append(prediction)
    return predictions


def test_evaluation_on_the_variant_uses_the_shapes_class_ids(tmp_path, monkeypatch):
    """Detections equal to the ground truth score AP 1 on the variant; with every label moved to the
    next class they score about 0 (only where a shape of the next class overlaps the box): the
    model's contiguous labels mean the same classes on both datasets."""
    from fcos_core.config.paths_catalog import DatasetCatalog
    from fcos_core.data.datasets import ShapesVariantDataset
    from fcos_core.data.datasets.evaluation import evaluate

    monkeypatch.setenv("FCOS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FCOS_SHAPES_NUM_IMAGES", "4")
    dataset = ShapesVariantDataset(remove_images_without_annotations=False,
                                   **DatasetCatalog.get("shapes_val_variant")["args"])
    exact, _ = evaluate(dataset, _predictions_from_ground_truth(dataset), str(tmp_path / "exact"))
    shifted, _ = evaluate(dataset, _predictions_from_ground_truth(dataset, 1), str(tmp_path / "shifted"))
    assert exact.results["bbox"]["AP"] == pytest.approx(1.0)
    assert 0 <= shifted.results["bbox"]["AP"] < 0.05
