"""PascalVOCDataset: xml parsing with difficult objects, 1-based corners, bad entries reported."""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from fcos_core.data.datasets import PascalVOCDataset, data_skip_counts

XML = """<annotation>
  <filename>{name}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
OBJ = """<object><name>{cls}</name><difficult>{difficult}</difficult>
  <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def write_voc(root, images):
    """VOC folder; ``images`` = {name: (w, h, [(cls, difficult, x1, y1, x2, y2)])}; split "test"."""
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for name, (w, h, objects) in images.items():
        objs = "".join(OBJ.format(cls=c, difficult=d, x1=x1, y1=y1, x2=x2, y2=y2)
                       for c, d, x1, y1, x2, y2 in objects)
        with open(os.path.join(root, "Annotations", name + ".xml"), "w") as f:
            f.write(XML.format(name=name, w=w, h=h, objects=objs))
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(os.path.join(root, "JPEGImages", name + ".jpg"))
    with open(os.path.join(root, "ImageSets", "Main", "test.txt"), "w") as f:
        f.write("\n".join(images) + "\n")


def test_parses_boxes_labels_and_difficult(tmp_path):
    write_voc(str(tmp_path), {
        "000001": (50, 40, [("dog", 0, 1, 2, 11, 22), ("person", 1, 5, 5, 30, 30), ("Car ", 0, 10, 10, 50, 40)]),
        "000002": (30, 60, [("cat", 1, 1, 1, 10, 10)]),
    })
    ds = PascalVOCDataset(str(tmp_path), "test", use_difficult=True)
    assert len(ds) == 2 and ds.get_img_info(1) == {"height": 60, "width": 30}
    gt = ds.get_groundtruth(0)
    assert gt.size == (50, 40)
    assert gt.bbox.tolist() == [[0, 1, 10, 21], [4, 4, 29, 29], [9, 9, 49, 39]]  # 1-based -> 0-based
    assert gt.get_field("labels").tolist() == [12, 15, 7]
    assert [ds.map_class_id_to_class_name(c) for c in (12, 15, 7)] == ["dog", "person", "car"]
    assert gt.get_field("difficult").tolist() == [False, True, False]
    img, target, index = ds[0]
    assert index == 0 and img.size == (50, 40) and len(target) == 3

    train = PascalVOCDataset(str(tmp_path), "test", use_difficult=False)
    assert train.get_groundtruth(0).get_field("labels").tolist() == [12, 7]
    assert len(train.get_groundtruth(1)) == 0 and not data_skip_counts(train)


def test_bad_entries_are_reported_and_skipped(tmp_path, caplog):
    write_voc(str(tmp_path), {
        "a": (50, 40, [("dog", 0, 1, 2, 11, 22), ("unicorn", 0, 1, 1, 5, 5), ("cat", 0, 20, 5, 10, 9),
                       ("cat", 0, 60, 5, 70, 9), ("cat", 0, "x", 5, 70, 9)]),
        "b": (50, 40, []),
    })
    with open(os.path.join(str(tmp_path), "Annotations", "b.xml"), "w") as f:
        f.write("<annotation><size>")  # broken xml
    os.remove(os.path.join(str(tmp_path), "JPEGImages", "a.jpg"))
    with caplog.at_level(logging.WARNING):
        ds = PascalVOCDataset(str(tmp_path), "test")
        assert len(ds) == 1 and ds.get_groundtruth(0).get_field("labels").tolist() == [12]
        with pytest.raises(RuntimeError, match="none of its 1 images"):
            ds[0]
    for needle in ["'unicorn'", "object 2: box", "object 3: box", "object 4: <bndbox>", "b.xml", "a.jpg"]:
        assert needle in caplog.text, needle
    assert data_skip_counts(ds) == {"unknown_category": 1, "empty_box": 1, "outside_image": 1, "bad_box": 1,
                                    "bad_annotation_file": 1, "unreadable_image": 1}


def test_missing_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file"):
        PascalVOCDataset(str(tmp_path), "train")
