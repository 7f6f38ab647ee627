"""make_coco_like: a COCO-like json and images, deterministic, COCO's categories, broken records on
request, written atomically (never a half-written folder under the final name)."""
import json
import os

import pytest
from PIL import Image

from fcos_core.data.datasets import synthetic_coco
from fcos_core.data.datasets.synthetic_coco import COCO_CATEGORY_IDS, UNLISTED_CATEGORY_ID, make_coco_like
from fcos_core.engine.coco_classes import COCO_CATEGORIES


def test_deterministic_and_coco_like(tmp_path, folder_digest):
    a = make_coco_like(str(tmp_path / "a"), num_images=50, seed=7, broken=1)
    b = make_coco_like(str(tmp_path / "b"), num_images=50, seed=7, broken=1)
    c = make_coco_like(str(tmp_path / "c"), num_images=50, seed=8, broken=1)
    assert folder_digest(str(tmp_path / "a")) == folder_digest(str(tmp_path / "b"))
    assert open(a["ann_file"], "rb").read() == open(b["ann_file"], "rb").read() != open(c["ann_file"], "rb").read()
    data = json.load(open(a["ann_file"]))
    assert [(c["id"], c["name"]) for c in data["categories"]] == list(zip(COCO_CATEGORY_IDS, COCO_CATEGORIES[1:]))
    assert len(data["categories"]) == 80 and len(data["images"]) == 50 == len(set(i["id"] for i in data["images"]))
    assert a["annotations"] == len(data["annotations"]) and 5 * 50 < a["annotations"] < 10 * 50
    image_ids = {i["id"]: i for i in data["images"]}
    polygons = [x for x in data["annotations"] if not x["iscrowd"]]
    assert all(len(x["segmentation"][0]) >= 16 for x in polygons)
    for img in data["images"][:5]:  # each file name is a decodable image of the json's size
        with Image.open(os.path.join(a["root"], img["file_name"])) as im:
            assert im.size == (img["width"], img["height"]) and im.format == "JPEG"
    broken = [x for x in data["annotations"] if len(x["bbox"]) != 4 or x["image_id"] not in image_ids
              or x["category_id"] == UNLISTED_CATEGORY_ID]
    assert len(broken) == 3 and UNLISTED_CATEGORY_ID not in COCO_CATEGORY_IDS


def test_existing_folder_and_failed_write(tmp_path, monkeypatch):
    out = str(tmp_path / "c")
    make_coco_like(out, num_images=5)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_coco_like(out, num_images=5)
    before = open(os.path.join(out, "annotations.json"), "rb").read()

    def fail(*args):
        raise KeyboardInterrupt  # a crash half-way through the json

    monkeypatch.setattr(synthetic_coco, "_annotations", fail)
    with pytest.raises(KeyboardInterrupt):
        make_coco_like(out, num_images=6, overwrite=True)
    assert open(os.path.join(out, "annotations.json"), "rb").read() == before  # the old folder is intact
    monkeypatch.undo()
    assert make_coco_like(out, num_images=6, overwrite=True)["images"] == 6
    assert len(os.listdir(os.path.join(out, "images"))) == 6 and not os.path.exists(out + ".partial")
