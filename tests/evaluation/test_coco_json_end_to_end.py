"""tools/test_net.py's path (fcos_core.engine.defaults.run_test: catalog, data loader, inference,
COCO evaluation) on a json as annotation tools write it: no area / iscrowd, category ids 3, 7, 12,
an image without annotations and file names in sub-folders. A fake detector finds pure-colour
squares exactly, so every AP is known."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fcos_core.config import load_config
from fcos_core.config.paths_catalog import results_folder_name
from fcos_core.engine.defaults import run_test
from fcos_core.structures.bounding_box import BoxList

QUICKSTART = "configs/quickstart/fcos_shapes.yaml"
CATEGORIES = [{"id": 12, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
# contiguous labels: cat 1, dog 2, bird 3, found as red, green, blue squares
COLOURS = {3: (200, 0, 0), 7: (0, 200, 0), 12: (0, 0, 200)}
# file name, (width, height), [(json category id, [x, y, w, h])]; squares drawn at 200, so score 200/255
IMAGES = [
    ("batch1/a.png", (96, 64), [(3, [4, 6, 20, 12]), (7, [50, 20, 30, 30])]),
    ("batch2/deep/b.png", (64, 80), [(12, [10, 40, 40, 30]), (3, [30, 4, 16, 16])]),
    ("empty.png", (80, 64), []),
]


class ColourDetector(nn.Module):
    """One box per pure-colour region of each image (its pixel-inclusive extent, in the frame the
    model is given): label 1/2/3 for red/green/blue, score = mean intensity / 255."""

    def __init__(self, pixel_mean):
        super().__init__()
        self.register_buffer("mean", torch.tensor(pixel_mean).view(3, 1, 1))

    def forward(self, images):
        results = []
        for tensor, (h, w) in zip(images.tensors, images.image_sizes):
            bgr = tensor[:, :h, :w] + self.mean  # back to BGR 0-255 (TO_BGR255, PIXEL_STD 1)
            boxes, labels, scores = [], [], []
            for label, channel in ((1, 2), (2, 1), (3, 0)):
                others = [c for c in range(3) if c != channel]
                mask = (bgr[channel] > 100) & (bgr[others] < 50).all(0)
                if mask.any():
                    ys, xs = torch.nonzero(mask, as_tuple=True)
                    boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
                    labels.append(label)
                    scores.append(float(bgr[channel][mask].mean()) / 255)
            boxlist = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), (w, h), mode="xyxy")
            boxlist.add_field("labels", torch.tensor(labels, dtype=torch.int64))
            boxlist.add_field("scores", torch.tensor(scores, dtype=torch.float32))
            results.append(boxlist)
        return results


def write_dataset(root, false_positive):
    """Images (PNG, sub-folders) and a tool-style json; ``false_positive``: a bright red square (a
    "cat" found with score 1.0) on the image without annotations."""
    annotations = []
    for k, (name, (w, h), objects) in enumerate(IMAGES):
        pixels = np.zeros((h, w, 3), np.uint8)
        for cat, (x, y, bw, bh) in objects:
            pixels[y:y + bh, x:x + bw] = COLOURS[cat]
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": cat, "bbox": [x, y, bw, bh]})
        if false_positive and not objects:
            pixels[10:30, 20:40] = (255, 0, 0)
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / name)
    data = {"images": [{"id": k + 1, "file_name": n, "width": s[0], "height": s[1]} for k, (n, s, _) in enumerate(IMAGES)],
            "annotations": annotations, "categories": CATEGORIES}
    (root / "tool.json").write_text(json.dumps(data))
    return "{}:{}".format(root / "tool.json", root / "images")


@pytest.mark.parametrize("false_positive, per_class", [
    (False, {"cat": 1.0, "dog": 1.0, "bird": 1.0}),
    (True, {"cat": 2 / 3, "dog": 1.0, "bird": 1.0}),  # cat: FP (1.0) above its two TPs (0.78)
])
def test_run_test_on_a_tool_json(tmp_path, false_positive, per_class):
    name = write_dataset(tmp_path, false_positive)
    cfg = load_config(QUICKSTART, [
        "DATASETS.TEST", "('{}',)".format(name), "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.DEVICE", "cpu",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "1000",  # short sides are 64: no resizing
        "TEST.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.SIZE_DIVISIBILITY", "32"])
    results = run_test(cfg, ColourDetector(cfg.INPUT.PIXEL_MEAN), distributed=False)
    assert len(results) == 1
    coco_results, detections = results[0]
    bbox = coco_results.results["bbox"]
    assert bbox["AP"] == pytest.approx(sum(per_class.values()) / 3)
    assert bbox["AP50"] == pytest.approx(bbox["AP"]) and bbox["AP75"] == pytest.approx(bbox["AP"])
    assert {d["category_id"] for d in detections["bbox"]} == {3, 7, 12}
    # the results of a "<json>:<folder>" dataset stay under OUTPUT_DIR, in a folder named by the json
    (folder,) = [p.parent for p in tmp_path.rglob("per_class_ap.json")]
    assert folder.parent == tmp_path / "out" / "inference" and folder.name == results_folder_name(name)
    assert folder.name.startswith(os.path.splitext(os.path.basename(name.split(":")[0]))[0] + "-")
    written = json.loads((folder / "per_class_ap.json").read_text())
    assert written == pytest.approx(per_class) and list(written) == ["cat", "dog", "bird"]
    table = (folder / "results.txt").read_text()
    for cls, ap in per_class.items():
        assert "{:<8} {:>6.2f}".format(cls, 100 * ap) in table


def test_run_test_leaves_an_unreadable_image_out_and_keeps_the_others_in_place(tmp_path, caplog):
    """The corrupt image's index keeps a placeholder, so the next images' detections stay theirs."""
    name = write_dataset(tmp_path, false_positive=False)
    (tmp_path / "images" / "batch1" / "a.png").write_bytes(b"not a png")
    cfg = load_config(QUICKSTART, [
        "DATASETS.TEST", "('{}',)".format(name), "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.DEVICE", "cpu",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "1000", "TEST.IMS_PER_BATCH", "1",
        "DATALOADER.NUM_WORKERS", "0"])
    results = run_test(cfg, ColourDetector(cfg.INPUT.PIXEL_MEAN), distributed=False)
    coco_results, detections = results[0]
    assert sorted((d["image_id"], d["category_id"]) for d in detections["bbox"]) == [(2, 3), (2, 12)]
    assert coco_results.results["bbox"]["AP"] == pytest.approx(1.0)
    written = json.loads(next(tmp_path.rglob("per_class_ap.json")).read_text())
    assert written == {"cat": pytest.approx(1.0), "dog": None, "bird": pytest.approx(1.0)}  # no dog left
    assert "batch1/a.png" in caplog.text and "left out of the evaluation" in caplog.text
