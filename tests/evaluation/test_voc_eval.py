"""VOC evaluation: a hand-computed case (11-point and area AP), difficult boxes, legacy +1 IoU,
images without predictions, resized predictions and the result file."""
import math

import numpy as np
import pytest
import torch

from fcos_core.data.datasets.evaluation import evaluate
from fcos_core.data.datasets.evaluation.voc import eval_detection_voc
from fcos_core.structures import BoxList

CLASSES = ("__background__", "a", "b", "c", "d")
A, B, C, D = 1, 2, 3, 4


def boxlist(size, boxes, labels, scores=None, difficult=None):
    """An xyxy BoxList with "labels" and either "scores" (prediction) or "difficult" (ground truth)."""
    b = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    b.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    if scores is not None:
        b.add_field("scores", torch.tensor(scores, dtype=torch.float32))
    if difficult is not None:
        b.add_field("difficult", torch.tensor(difficult, dtype=torch.bool))
    return b


def hand_case():
    """Two 100x100 images. Sorted detections of class a: TP .9, ignored .8 (on a difficult box),
    FP .7, TP .6, FP .5 (duplicate), with 2 non-difficult a boxes:
    precision [1, 1, 1/2, 2/3, 1/2], recall [1/2, 1/2, 1/2, 1, 1]
    -> 11-point AP (6 * 1 + 5 * 2/3) / 11 = 28/33, area AP 1/2 * 1 + 1/2 * 2/3 = 5/6.
    Class b: one box found with IoU 0.5 exactly (legacy +1 widths) -> 1. Class c: missed -> 0.
    Class d: detections only, no ground truth -> nan (left out of the mean).
    """
    size = (100, 100)
    gts = [
        boxlist(size, [[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 59, 59]], [A, A, C], difficult=[0, 1, 0]),
        boxlist(size, [[0, 0, 9, 9], [0, 0, 9, 9]], [A, B], difficult=[0, 0]),
    ]
    preds = [
        boxlist(size, [[0, 0, 9, 9], [20, 20, 29, 29], [50, 50, 59, 59]], [A, A, A], scores=[0.9, 0.8, 0.7]),
        # (0, 0, 9, 4) vs (0, 0, 9, 9): 50 / 100 pixels with +1 widths (36 / 81 without)
        boxlist(size, [[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 4], [70, 70, 79, 79]], [A, A, B, D],
                scores=[0.6, 0.5, 0.4, 0.3]),
    ]
    return preds, gts


@pytest.mark.parametrize("use_07_metric, ap_a", [(True, 28 / 33), (False, 5 / 6)])
def test_hand_computed_ap(use_07_metric, ap_a):
    preds, gts = hand_case()
    result = eval_detection_voc(preds, gts, iou_thresh=0.5, use_07_metric=use_07_metric)
    ap = result["ap"]
    assert len(ap) == 5 and math.isnan(ap[0]) and math.isnan(ap[D])
    np.testing.assert_allclose(ap[1:4], [ap_a, 1.0, 0.0], rtol=0, atol=1e-6)
    assert result["map"] == pytest.approx((ap_a + 1.0 + 0.0) / 3, abs=1e-6)


def test_difficult_boxes_are_neither_tp_nor_fp():
    size = (100, 100)
    gt = boxlist(size, [[0, 0, 9, 9], [20, 20, 29, 29]], [A, A], difficult=[0, 1])
    with_ignored = boxlist(size, [[0, 0, 9, 9], [20, 20, 29, 29]], [A, A], scores=[0.5, 0.9])
    without = boxlist(size, [[0, 0, 9, 9]], [A], scores=[0.5])
    for metric in (True, False):
        assert eval_detection_voc([with_ignored], [gt], use_07_metric=metric)["ap"][A] == pytest.approx(1.0)
        assert eval_detection_voc([without], [gt], use_07_metric=metric)["ap"][A] == pytest.approx(1.0)
    # only difficult ground truth: no positives, AP undefined
    only_difficult = boxlist(size, [[20, 20, 29, 29]], [A], difficult=[1])
    assert math.isnan(eval_detection_voc([without], [only_difficult])["ap"][A])


def test_nothing_at_all():
    empty_pred = boxlist((10, 10), [], [], scores=[])
    empty_gt = boxlist((10, 10), [], [], difficult=[])
    result = eval_detection_voc([empty_pred], [empty_gt])
    assert len(result["ap"]) == 0 and math.isnan(result["map"])
    with pytest.raises(ValueError):
        eval_detection_voc([empty_pred], [])


class FakeVOCDataset(object):
    """The interface of PascalVOCDataset that evaluation uses."""

    CLASSES = CLASSES

    def __init__(self, gts):
        self.gts = gts

    def __len__(self):
        return len(self.gts)

    def get_groundtruth(self, index):
        return self.gts[index]

    def get_img_info(self, index):
        width, height = self.gts[index].size
        return {"width": width, "height": height}

    def map_class_id_to_class_name(self, class_id):
        return CLASSES[class_id]


def test_evaluate_dispatches_voc_resizes_and_counts_images_without_predictions(tmp_path):
    preds, gts = hand_case()
    # a third image whose b box is missed: its ground truth must count (recall of b 1/2)
    gts.append(boxlist((60, 40), [[10, 10, 29, 29]], [B], difficult=[0]))
    preds.append(boxlist((60, 40), [], [], scores=[]))
    # the first image's predictions in a half-size image
    preds[0] = preds[0].resize((50, 50))
    result = evaluate(FakeVOCDataset(gts), preds, str(tmp_path))
    ap = result["ap"]
    assert len(ap) == len(CLASSES)
    np.testing.assert_allclose(ap[1:4], [28 / 33, 6 / 11, 0.0], rtol=0, atol=1e-6)
    assert result["map"] == pytest.approx((28 / 33 + 6 / 11) / 3, abs=1e-6)
    text = (tmp_path / "result.txt").read_text()
    assert text.startswith("mAP: {:.4f}".format(result["map"]))
    assert "b               : 0.5455" in text and "d               : nan" in text
    assert len(torch.load(str(tmp_path / "predictions.pth"), weights_only=True)) == 3
