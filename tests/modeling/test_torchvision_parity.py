"""torchvision's COCO FCOS as a model of ours: converted weights + configs/torchvision/fcos_resnet50_fpn_coco.yaml
give torchvision's detections, through the whole pipeline (PIL image -> our transforms -> our model -> boxes in
the original image), on images of several sizes.

torchvision's model is built here with random weights shaped like the published ones: 91 logits, the
background and the 10 unused COCO ids never trained (bias -1e4), frozen batch norms with eps 1e-5 and non-trivial
statistics, and biases raised so that thousands of candidates pass the 0.2 threshold (the post-processing then
has real work: top-k per level, NMS, the 100 cut). Both models run at a smaller test size (min 320, max 512)
to keep the test short; the rules do not depend on it.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from fcos_core.config import load_config
from fcos_core.data.transforms import build_transforms, transform_image
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils.formats.report import config_mismatches
from fcos_core.utils.formats.torchvision import COCO_CATEGORY_IDS, torchvision_fcos_to_detector

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "torchvision" / "fcos_resnet50_fpn_coco.yaml"
MIN_SIZE, MAX_SIZE = 320, 512
# (height, width): landscape, portrait, padded to 160 x 512 (P6/P7 strides 53/64 and 80/128, not 64 and 128),
# small (upscaled by 1.6, padded width 384)
SIZES = [(480, 640), (640, 427), (300, 1000), (200, 230)]


def _frozen_like_published(model):
    """BatchNorm2d -> torchvision's FrozenBatchNorm2d (eps 1e-5), as in the published file, with random statistics."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    gen = torch.Generator().manual_seed(1)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=1e-5)
                n = child.num_features
                weight, var = torch.rand(n, generator=gen) + 0.5, torch.rand(n, generator=gen) + 0.5
                # some channels of tiny variance (and weight: the same scale), as trained networks have:
                # there eps 1e-5 changes the scale by 5%
                tiny = torch.rand(n, generator=gen) < 0.2
                var[tiny], weight[tiny] = 1e-4, weight[tiny] * 1e-2
                frozen.weight.copy_(weight)
                frozen.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                frozen.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                frozen.running_var.copy_(var)
                setattr(parent, name, frozen)


@pytest.fixture(scope="module")
def models():
    """(torchvision's FCOS, ours, the conversion report), both in eval mode at MIN_SIZE / MAX_SIZE."""
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(0)
    tv = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, min_size=MIN_SIZE, max_size=MAX_SIZE)
    _frozen_like_published(tv)
    gen = torch.Generator().manual_seed(2)
    head = tv.head
    with torch.no_grad():
        bias = torch.rand(91, generator=gen) * 2.5 - 5.0  # about 9% of (location, class) pairs pass 0.2
        bias[[0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83]] = -1e4  # never trained: never detected
        head.classification_head.cls_logits.bias.copy_(bias)
        head.regression_head.bbox_ctrness.bias.fill_(1.0)
        head.regression_head.bbox_reg.bias.copy_(torch.rand(4, generator=gen) + 1.5)  # boxes of ~2-5 strides
    tv.eval()
    state, report = torchvision_fcos_to_detector(tv.state_dict())
    cfg = load_config(str(CONFIG), ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", MIN_SIZE,
                                    "INPUT.MAX_SIZE_TEST", MAX_SIZE])
    ours = build_detection_model(cfg).eval()
    ours.load_state_dict(state, strict=True)
    return tv, ours, cfg, report


def _image(size, seed):
    """A smooth random RGB PIL image of ``size`` (height, width), uint8."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand(1, 3, max(h // 24, 2), max(w // 24, 2), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    img = (img + 0.1 * torch.rand(3, h, w, generator=g)).clamp(0, 1)
    return Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))


def _ours(model, cfg, images):
    """Our detections in the original images' pixels: list of (boxes [K, 4] xyxy, scores [K], labels [K] 1..80)."""
    transforms = build_transforms(cfg, is_train=False)
    with torch.no_grad():
        outputs = model([transform_image(transforms, img) for img in images])
    results = []
    for out, img in zip(outputs, images):
        out = out.resize(img.size)
        results.append((out.bbox, out.get_field("scores"), out.get_field("labels")))
    return results


def _assert_same_detections(ours, theirs):
    boxes, scores, labels = ours
    assert len(theirs["boxes"]) > 50, "too few detections to test the post-processing"
    assert boxes.shape == theirs["boxes"].shape
    coco_ids = torch.tensor(COCO_CATEGORY_IDS)[labels - 1]
    assert torch.equal(coco_ids, theirs["labels"])
    torch.testing.assert_close(scores, theirs["scores"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(boxes, theirs["boxes"], rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "{}x{}".format(*s))
def test_same_detections_as_torchvision(models, size):
    tv, ours, cfg, _ = models
    image = _image(size, seed=size[0] + size[1])
    with torch.no_grad():
        theirs = tv([TF.to_tensor(image)])[0]
    assert len(theirs["boxes"]) == 100  # the post-NMS cut does its work
    _assert_same_detections(_ours(ours, cfg, [image])[0], theirs)


def test_same_detections_as_torchvision_in_a_batch(models):
    """Two images of different sizes in one batch: both padded to the larger, so the smaller one's locations
    (strides from the padded size) and GroupNorm statistics are those of the batch, in both models."""
    tv, ours, cfg, _ = models
    images = [_image((480, 640), seed=7), _image((300, 380), seed=8)]
    with torch.no_grad():
        theirs = tv([TF.to_tensor(img) for img in images])
    for mine, their in zip(_ours(ours, cfg, images), theirs):
        _assert_same_detections(mine, their)


def test_the_report_names_what_the_config_needs(models):
    _, _, cfg, report = models
    assert config_mismatches(cfg, report.required_config) == []
    assert report.suggested_config == "torchvision/fcos_resnet50_fpn_coco.yaml"
    assert report.required_config["MODEL.FCOS.NUM_CLASSES"] == 81
    dropped_rows = [src for src, _ in report.dropped if "cls_logits" in src]
    assert len(dropped_rows) == 11
    assert any("largest classifier bias among the dropped rows: -1e+04" in note for note in report.notes)
    assert [dst for dst, _ in report.filled] == ["rpn.head.scales.{}.scale".format(i) for i in range(5)]
