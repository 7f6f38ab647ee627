"""fcos_core.data.browse: the ground truth drawn after the training transforms, where the model sees it."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from fcos_core.config import load_config
from fcos_core.data.browse import browse_from_config, contact_sheet, to_bgr_uint8
from fcos_core.data.transforms import transforms as T
from fcos_core.utils.visualizer import class_color

BACKGROUND = (30, 30, 30)  # RGB
OBJECT = (200, 60, 40)  # RGB


def write_dataset(folder, num_images=3):
    """``num_images`` 64x48 PNGs, each with one "dog" (json category 7, label 2) drawn at xywh
    (4, 20, 20, 20), i.e. xyxy (4, 20, 23, 39) pixel-inclusive, and a category "cat" (id 3, label 1)
    without boxes. Returns the DATASETS.TRAIN entry "<json>:<image folder>"."""
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        image = Image.new("RGB", (64, 48), BACKGROUND)
        ImageDraw.Draw(image).rectangle([4, 20, 23, 39], fill=OBJECT)
        image.save(img_dir / "img{}.png".format(i))
        images.append({"id": i + 1, "file_name": "img{}.png".format(i), "width": 64, "height": 48})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [4, 20, 20, 20]})
    cats = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    ann_file = folder / "train.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return "{}:{}".format(ann_file, img_dir)


def config(entry, *opts):
    """Training at the images' own size (short side 48: no resize), so pixels can be compared exactly."""
    return load_config(None, ["DATASETS.TRAIN", "('{}',)".format(entry), "INPUT.MIN_SIZE_TRAIN", "(48,)",
                              "INPUT.MAX_SIZE_TRAIN", "1000", "MODEL.FCOS.NUM_CLASSES", "3"] + list(opts))


@pytest.mark.parametrize("to_bgr255,mean,std", [
    (True, [102.9801, 115.9465, 122.7717], [1.0, 1.0, 1.0]),
    (False, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
])
def test_to_bgr_uint8_undoes_normalize(to_bgr255, mean, std):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    image, _ = T.ToTensor()(Image.fromarray(rgb), None)
    normalized = T.Normalize(mean, std, to_bgr255)(image)
    back = to_bgr_uint8(normalized, mean, std, to_bgr255)
    assert back.dtype == np.uint8 and back.shape == (10, 12, 3)
    assert np.array_equal(back, rgb[..., ::-1])


def test_boxes_drawn_where_the_flipped_boxes_are(tmp_path):
    entry = write_dataset(tmp_path / "data")
    cfg = config(entry, "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "1.0")
    paths, sheet = browse_from_config(cfg, str(tmp_path / "out"), num=2)
    assert [os.path.basename(p) for p in paths] == ["0000_img0.png", "0001_img1.png"]
    picture = cv2.imread(paths[0], cv2.IMREAD_COLOR)
    assert picture.shape == (48, 64, 3)
    # flipped: x' = 63 - x, so xyxy (4, 20, 23, 39) -> (40, 20, 59, 39); the object moved with it
    dog = class_color(2)
    assert tuple(picture[30, 40]) == dog and tuple(picture[30, 59]) == dog  # left and right edges
    assert tuple(picture[39, 50]) == dog  # bottom edge
    assert tuple(picture[30, 50]) == OBJECT[::-1]  # inside: the object, in BGR
    assert tuple(picture[30, 4]) == BACKGROUND and tuple(picture[30, 23]) == BACKGROUND  # not unflipped
    assert os.path.isfile(sheet)


def test_without_flip_boxes_stay_and_names_are_drawn(tmp_path):
    entry = write_dataset(tmp_path / "data")
    paths, _ = browse_from_config(config(entry, "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "0.0"), str(tmp_path / "out"),
                                  num=1)
    picture = cv2.imread(paths[0], cv2.IMREAD_COLOR)
    dog = class_color(2)
    assert tuple(picture[30, 4]) == dog and tuple(picture[30, 23]) == dog
    assert tuple(picture[30, 40]) == BACKGROUND
    # the "dog" label sits on a filled rectangle of the class colour above the box
    above = picture[:20, 4:40].reshape(-1, 3)
    assert (above == np.asarray(dog, np.uint8)).all(axis=1).sum() > 30


def test_resize_and_seeded_pictures_repeat(tmp_path):
    entry = write_dataset(tmp_path / "data")
    cfg = config(entry, "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "0.5")
    first, _ = browse_from_config(cfg, str(tmp_path / "a"), num=3)
    second, _ = browse_from_config(cfg, str(tmp_path / "b"), num=3)
    assert len(first) == 3
    for a, b in zip(first, second):
        pa, pb = cv2.imread(a), cv2.imread(b)
        assert pa.shape == (96, 128, 3) and np.array_equal(pa, pb)


def test_num_larger_than_dataset_and_test_split(tmp_path):
    entry = write_dataset(tmp_path / "data", num_images=2)
    cfg = config(entry, "DATASETS.TEST", "('{}',)".format(entry), "INPUT.MIN_SIZE_TEST", "24",
                 "INPUT.MAX_SIZE_TEST", "1000")
    paths, sheet = browse_from_config(cfg, str(tmp_path / "out"), num=10, split="test")
    assert len(paths) == 2
    assert cv2.imread(paths[0]).shape == (24, 32, 3)  # the test resize
    with pytest.raises(ValueError, match="split"):
        browse_from_config(cfg, str(tmp_path / "out"), num=1, split="val")


def test_contact_sheet_grid(tmp_path):
    paths = []
    for k, size in enumerate([(40, 80), (80, 40), (50, 50), (20, 30), (60, 60)]):
        path = str(tmp_path / "{}.png".format(k))
        cv2.imwrite(path, np.full(size + (3,), 40 * k, np.uint8))
        paths.append(path)
    sheet = cv2.imread(contact_sheet(paths, str(tmp_path / "sheet.png"), tile=32))
    assert sheet.shape == (2 * 36 + 4, 3 * 36 + 4, 3)  # 5 pictures: 3 columns, 2 rows, 4-px gaps
    assert tuple(sheet[4, 4]) == (0, 0, 0)  # first tile, top-left
    assert tuple(sheet[4 + 36, 4 + 36]) == (160, 160, 160)  # fifth tile: row 1, column 1
    with pytest.raises(FileNotFoundError, match="missing.png"):
        contact_sheet([str(tmp_path / "missing.png")], str(tmp_path / "x.png"))


def test_draw_sample_accepts_xywh_targets():
    from fcos_core.data.browse import draw_sample
    from fcos_core.structures.bounding_box import BoxList

    target = BoxList(torch.tensor([[2.0, 3.0, 10.0, 8.0]]), (20, 16), mode="xywh")
    target.add_field("labels", torch.tensor([1]))
    image = torch.zeros(3, 16, 20)
    picture = draw_sample(image, target, [0, 0, 0], [1, 1, 1], True, names=["__background", "a"])
    # xywh (2, 3, 10, 8) -> xyxy (2, 3, 11, 10)
    assert tuple(picture[6, 11]) == class_color(1) and tuple(picture[6, 2]) == class_color(1)
