"""tools/browse_dataset.py run as a command: pictures, contact sheet and report files of a tiny dataset."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
from PIL import Image, ImageDraw

from fcos_core.utils.visualizer import class_color

ROOT = Path(__file__).resolve().parents[2]


def write_dataset(folder):
    """Four 80x60 images with a filled square; one "ring" box each (xywh 8, 30, 20, 20), none on the
    last image, and one annotation with a bad box. Returns "<json>:<image folder>"."""
    img_dir = folder / "images"
    img_dir.mkdir(parents=True)
    images, anns = [], []
    for i in range(4):
        image = Image.new("RGB", (80, 60), (20, 40, 60))
        ImageDraw.Draw(image).rectangle([8, 30, 27, 49], fill=(240, 240, 240))
        image.save(img_dir / "sub_{}.png".format(i))
        images.append({"id": i + 1, "file_name": "sub_{}.png".format(i), "width": 80, "height": 60})
        if i < 3:
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": 5, "bbox": [8, 30, 20, 20]})
    anns.append({"id": 9, "image_id": 1, "category_id": 5, "bbox": [1, 2, "x", 4]})
    ann_file = folder / "train.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 5, "name": "ring"}]}))
    return "{}:{}".format(ann_file, img_dir)


def run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "browse_dataset.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_browse_dataset_command(tmp_path):
    entry = write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    result = run_tool("--output", str(out), "--num", "2", "DATASETS.TRAIN", "('{}',)".format(entry),
                      "INPUT.MIN_SIZE_TRAIN", "(60,)", "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "1.0",
                      "MODEL.FCOS.NUM_CLASSES", "2")
    assert result.returncode == 0, result.stderr
    pictures = sorted(p.name for p in out.glob("0*.png"))
    assert pictures == ["0000_sub_0.png", "0001_sub_1.png"]
    picture = cv2.imread(str(out / pictures[0]))
    # flipped: x1 = 80 - 1 - 27 = 52, x2 = 80 - 1 - 8 = 71
    assert tuple(picture[40, 52]) == class_color(1) and tuple(picture[40, 71]) == class_color(1)
    assert (out / "contact_sheet.png").is_file() and (out / "report.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 4 and report["images_without_boxes"] == 1 and report["boxes"] == 3
    assert report["classes"] == [{"label": 1, "name": "ring", "images": 3, "boxes": 3}]
    assert report["skipped"] == {"bad_box": 1}
    assert "ring" in result.stdout and "Dataset report" in (out / "report.txt").read_text()


def test_report_only_and_bad_arguments(tmp_path):
    entry = write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    result = run_tool("--output", str(out), "--num", "0", "DATASETS.TRAIN", "('{}',)".format(entry),
                      "MODEL.FCOS.NUM_CLASSES", "2")
    assert result.returncode == 0, result.stderr
    assert not list(out.glob("0*.png")) and (out / "report.json").is_file()
    bad = run_tool("--split", "val", "DATASETS.TRAIN", "('{}',)".format(entry))
    assert bad.returncode != 0 and "val" in bad.stderr
    missing = run_tool("--output", str(out), "DATASETS.TRAIN", "('{}',)".format(tmp_path / "none.json:img"))
    assert missing.returncode != 0 and "none.json" in missing.stderr
