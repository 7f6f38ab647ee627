"""fcos_core.data.report: counts from the annotations, sizes at the training scale against the FCOS
levels, skipped annotations, warnings, and the written report files."""
import json

import numpy as np
import pytest
from PIL import Image

from fcos_core.config import load_config
from fcos_core.data.report import (
    format_report, level_ranges, make_report, size_summary, training_scales, write_report,
)


def write_coco(folder, images, annotations, categories):
    """PNG images (grey, drawn with PIL) and their COCO json in ``folder``; ``images`` = [(w, h)],
    ids 1..; annotations without "id" get one. Returns the "<json>:<image folder>" catalog entry."""
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (w, h) in enumerate(images):
        Image.new("RGB", (w, h), (90, 90, 90)).save(img_dir / "{}.png".format(k + 1))
        entries.append({"id": k + 1, "file_name": "{}.png".format(k + 1), "width": w, "height": h})
    anns = [dict({"id": k + 1}, **a) for k, a in enumerate(annotations)]
    cats = [{"id": c, "name": n} for c, n in categories]
    ann_file = folder / "train.json"
    ann_file.write_text(json.dumps({"images": entries, "annotations": anns, "categories": cats}))
    return "{}:{}".format(ann_file, img_dir)


def small_dataset(folder):
    """3 images: 200x100 with a cat (xywh 10,10,20,20) and a dog (50,20,100,60); 100x100 with a cat
    (0,0,80,40), an empty box and an unknown category; 100x100 without boxes. Categories are
    non-contiguous (3 = cat, 7 = dog); a crowd box is not counted."""
    return write_coco(folder, [(200, 100), (100, 100), (100, 100)], [
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20]},
        {"image_id": 1, "category_id": 7, "bbox": [50, 20, 100, 60]},
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 80, 40]},
        {"image_id": 2, "category_id": 3, "bbox": [5, 5, 0, 10]},  # empty
        {"image_id": 2, "category_id": 99, "bbox": [5, 5, 10, 10]},  # unknown category
        {"image_id": 2, "category_id": 7, "bbox": [0, 0, 50, 50], "iscrowd": 1},
    ], [(3, "cat"), (7, "dog")])


def config(entry, *opts):
    return load_config(None, ["DATASETS.TRAIN", "('{}',)".format(entry), "MODEL.FCOS.NUM_CLASSES", "3"]
                       + list(opts))


def test_counts_levels_and_skipped(tmp_path):
    report = make_report(config(small_dataset(tmp_path), "INPUT.MIN_SIZE_TRAIN", "(200,)"))
    assert report["images"] == 3 and report["images_without_boxes"] == 1 and report["boxes"] == 3
    assert report["classes"] == [{"label": 1, "name": "cat", "images": 2, "boxes": 2},
                                 {"label": 2, "name": "dog", "images": 1, "boxes": 1}]
    assert report["skipped"] == {"empty_box": 1, "unknown_category": 1}
    assert report["levels"]["names"] == ["P3", "P4", "P5", "P6", "P7"]
    (scale,) = report["scales"]
    # both images scale by 2 (short side 100 -> 200); x2 - x1 = w - 1: cat 19x19 -> half 19 (P3),
    # dog 99x59 -> 198x118, half 99 (P4), cat 79x39 -> 158x78, half 79 (P4)
    assert scale["short_side"] == 200
    assert scale["boxes_per_level"] == [1, 2, 0, 0, 0]
    assert scale["boxes_per_level_per_class"] == [[0] * 5, [1, 1, 0, 0, 0], [0, 1, 0, 0, 0]]
    assert scale["half_size"] == [19.0, 79.0, 99.0]
    assert scale["below_smallest_stride"] == 0 and scale["beyond_last_boundary"] == 0
    assert report["warnings"] == []


def test_several_training_sizes_use_the_smallest_and_largest(tmp_path):
    cfg = config(small_dataset(tmp_path), "INPUT.MIN_SIZE_TRAIN", "(200, 100, 150)")
    small, large = make_report(cfg)["scales"]
    assert (small["short_side"], large["short_side"]) == (100, 200)
    assert small["boxes_per_level"] == [3, 0, 0, 0, 0]  # no resize: halves 9.5, 49.5, 39.5
    assert large["boxes_per_level"] == [1, 2, 0, 0, 0]


def test_max_size_caps_the_scale(tmp_path):
    # 200x100 at short side 200 would be 400 wide; MAX_SIZE_TRAIN 300 makes it 300x150 (factor 1.5):
    # cat 19 -> half 14.25, dog 99 -> half 74.25; the 100x100 image still doubles: cat 79 -> half 79
    cfg = config(small_dataset(tmp_path), "INPUT.MIN_SIZE_TRAIN", "(200,)", "INPUT.MAX_SIZE_TRAIN", "300")
    (scale,) = make_report(cfg)["scales"]
    assert scale["max_size"] == 300 and scale["half_size"] == pytest.approx([14.25, 74.25, 79.0])


def test_training_scales_follow_jitter_and_crop():
    assert training_scales([800], 1333) == [{"short_side": 800, "max_size": 1333, "crop": None}]
    small, large = training_scales([640, 800], 1333, scale_jitter=(0.5, 1.5), crop=(0.8, 0.9))
    assert small == {"short_side": 320, "max_size": 666.5, "crop": None}
    assert large == {"short_side": 1200, "max_size": 1999.5, "crop": [0.8, 0.9]}


def test_scale_jitter_and_crop_in_the_report(tmp_path):
    # jitter (0.5, 1.5) of short side 200: 100 (factor 1) and 300 (factor 3); the crop to half of each
    # side makes the 200x100 image 100x50 before the resize to 300: factor 6 (long side 600 <= 1500)
    cfg = config(small_dataset(tmp_path), "INPUT.MIN_SIZE_TRAIN", "(200,)", "INPUT.MAX_SIZE_TRAIN", "1000",
                 "INPUT.SCALE_JITTER_TRAIN", "(0.5, 1.5)", "INPUT.CROP_PROB_TRAIN", "0.5",
                 "INPUT.CROP_SIZE_TRAIN", "(0.5, 0.5)")
    small, large = make_report(cfg)["scales"]
    assert (small["short_side"], small["max_size"], small["crop"]) == (100, 500, None)
    assert small["half_size"] == [9.5, 39.5, 49.5]
    assert (large["short_side"], large["max_size"], large["crop"]) == (300, 1500, [0.5, 0.5])
    # cat 19 -> 19 * 6 / 2 = 57 (P3); dog 99 -> 297 (P6); the 100x100 image: 50x50 -> 300x300, cat 79 -> 237 (P5)
    assert large["half_size"] == [57.0, 237.0, 297.0]
    assert large["boxes_per_level"] == [1, 0, 1, 1, 0]


def test_level_boundaries_are_inclusive_above():
    # half sizes 64 -> P3 (m_0 < 64 <= m_1), 64.5 -> P4, 600 -> P7 and past the last boundary, 3 -> below stride 8
    sizes = np.asarray([[128.0, 10.0], [10.0, 129.0], [1200.0, 1.0], [6.0, 6.0]])
    summary = size_summary(sizes, np.asarray([1, 1, 2, 2]), 2, [64, 128, 256, 512], [8, 16, 32, 64, 128])
    assert summary["boxes_per_level"] == [2, 1, 0, 0, 1]
    assert summary["below_smallest_stride"] == 1 and summary["beyond_last_boundary"] == 1
    assert summary["outside_fraction"] == 0.5
    assert level_ranges([64, 128])[0] == (0.0, 64.0) and level_ranges([64, 128])[-1][1] == float("inf")
    with pytest.raises(ValueError, match="SIZES_OF_INTEREST"):
        level_ranges([128, 64])


def tiny_or_spread(folder, sizes):
    """One 400x400 image per box side in ``sizes``, a square "obj" of that side at (10, 10)."""
    return write_coco(folder, [(400, 400)] * len(sizes),
                      [{"image_id": k + 1, "category_id": 1, "bbox": [10, 10, s, s]} for k, s in enumerate(sizes)],
                      [(1, "obj")])


def test_warns_for_tiny_objects_not_for_spread_ones(tmp_path):
    opts = ["INPUT.MIN_SIZE_TRAIN", "(400,)", "MODEL.FCOS.NUM_CLASSES", "2"]
    tiny = make_report(config(tiny_or_spread(tmp_path / "tiny", [4, 5, 6, 4, 60]), *opts))
    assert tiny["scales"][0]["below_smallest_stride"] == 4
    assert any("80% of the boxes are outside the levels' useful range" in w for w in tiny["warnings"])
    # halves 20, 50 (P3), 100 (P4), 150, 190 (P5): no level holds over 90%, nothing below a stride
    spread = make_report(config(tiny_or_spread(tmp_path / "spread", [41, 101, 201, 301, 381]), *opts))
    assert spread["scales"][0]["boxes_per_level"] == [2, 1, 2, 0, 0]
    assert spread["warnings"] == []


def test_warns_for_one_level_and_class_count(tmp_path):
    entry = tiny_or_spread(tmp_path, [41, 50, 60, 70])
    report = make_report(config(entry, "INPUT.MIN_SIZE_TRAIN", "(400,)", "MODEL.FCOS.NUM_CLASSES", "5"))
    assert any("100% of the boxes fall in level P3" in w for w in report["warnings"])
    assert any("NUM_CLASSES is 5 but the dataset has 1 classes" in w for w in report["warnings"])


def test_check_images_counts_unreadable(tmp_path):
    entry = tiny_or_spread(tmp_path, [40, 40, 40])
    (tmp_path / "images" / "2.png").write_bytes(b"not a png")
    cfg = config(entry, "MODEL.FCOS.NUM_CLASSES", "2")
    assert "unreadable_image" not in make_report(cfg)["skipped"]
    report = make_report(cfg, check_images=True)
    assert report["skipped"] == {"unreadable_image": 1}
    assert report["boxes"] == 3  # the report counts annotations; training skips the image when it reads it


def test_write_report_files(tmp_path):
    report = make_report(config(tiny_or_spread(tmp_path / "d", [4, 5, 6]), "INPUT.MIN_SIZE_TRAIN", "(400,)",
                                "MODEL.FCOS.NUM_CLASSES", "2"))
    paths = write_report(report, str(tmp_path / "out"))
    saved = json.loads(open(paths["json"]).read())
    assert saved["boxes"] == 3 and saved["scales"][0]["below_smallest_stride"] == 3
    assert "half_sizes" not in saved and saved["warnings"] == report["warnings"] != []
    text = open(paths["txt"]).read()
    assert text == format_report(report) and "WARNING: 100% of the boxes are outside" in text
    assert "P3" in text and "obj" in text
    with Image.open(paths["png"]) as png:
        assert png.size[0] > 800 and png.size[1] > 200


def test_boxes_from_the_json_match_what_training_reads(tmp_path):
    """The report reads COCO boxes without decoding images; they must be the boxes of ``dataset[i]``
    (clipped, crowd, empty and unknown-category cases included)."""
    from fcos_core.data.datasets import COCODataset
    from fcos_core.data.report import image_boxes

    entry = write_coco(tmp_path, [(60, 40), (50, 50)], [
        {"image_id": 1, "category_id": 1, "bbox": [-5, -3, 20, 10]},  # clipped at the top-left
        {"image_id": 1, "category_id": 2, "bbox": [50, 30, 30, 30]},  # clipped at the bottom-right
        {"image_id": 1, "category_id": 2, "bbox": [70, 10, 5, 5]},  # outside: dropped
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 1, 1]},  # one pixel: dropped
        {"image_id": 2, "category_id": 2, "bbox": [1.5, 2.5, 10.25, 7], "iscrowd": 0},
        {"image_id": 2, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 1},
        {"image_id": 2, "category_id": 1, "bbox": [1, 1, float("nan"), 10]},
    ], [(1, "a"), (2, "b")])
    ann_file, img_dir = entry.rsplit(":", 1)
    dataset = COCODataset(ann_file, img_dir, remove_images_without_annotations=False)
    for i in range(len(dataset)):
        boxes, labels = image_boxes(dataset, i)
        _, target, _ = dataset[i]
        assert np.allclose(boxes, target.bbox.numpy()) and labels.tolist() == target.get_field("labels").tolist()
    assert len(image_boxes(dataset, 0)[0]) == 2 and len(image_boxes(dataset, 1)[0]) == 1


def test_voc_difficult_boxes_left_out_for_training(tmp_path):
    from fcos_core.data.datasets import PascalVOCDataset
    from fcos_core.data.report import image_boxes

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    objects = "".join("<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>2</xmin><ymin>3</ymin>"
                      "<xmax>{}</xmax><ymax>20</ymax></bndbox></object>".format(n, d, x2)
                      for n, d, x2 in (("dog", 0, 12), ("cat", 1, 30)))
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><size><width>40</width><height>30</height></size>{}</annotation>".format(objects))
    Image.new("RGB", (40, 30)).save(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("a\n")
    dataset = PascalVOCDataset(str(tmp_path), "test", use_difficult=True)
    boxes, labels = image_boxes(dataset, 0, drop_difficult=True)
    assert boxes.tolist() == [[1.0, 2.0, 11.0, 19.0]] and [dataset.class_names[k] for k in labels] == ["dog"]
    assert len(image_boxes(dataset, 0)[0]) == 2
