"""fcos_core.utils.formats.torchvision: torchvision FCOS state dicts onto our detector, with a report."""
from pathlib import Path

import pytest
import torch

from fcos_core.config import load_config
from fcos_core.modeling.detector import build_detection_model
from fcos_core.utils import imagenet_weights
from fcos_core.utils.formats.torchvision import (
    COCO_CATEGORY_IDS, kept_class_rows, looks_like_torchvision_fcos, torchvision_fcos_to_detector,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "torchvision" / "fcos_resnet50_fpn_coco.yaml")


def _torchvision_state(num_classes):
    from torchvision.models.detection import fcos_resnet50_fpn

    torch.manual_seed(0)
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes)
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.copy_(torch.arange(num_classes, dtype=torch.float32))
    return model.state_dict()


def test_the_coco_ids_are_torchvisions_categories():
    from torchvision.models.detection import FCOS_ResNet50_FPN_Weights

    names = FCOS_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    assert len(names) == 91
    assert list(COCO_CATEGORY_IDS) == [i for i, name in enumerate(names) if name not in ("__background__", "N/A")]
    kept, dropped = kept_class_rows(91)
    assert kept == list(COCO_CATEGORY_IDS) and sorted(r for r, _ in dropped) == [0, 12, 26, 29, 30, 45, 66, 68, 69,
                                                                                 71, 83]


def test_coco_classifier_rows_and_report():
    state = _torchvision_state(91)
    assert looks_like_torchvision_fcos(state)
    out, report = torchvision_fcos_to_detector(state)
    # bias of row i is i here: our label l carries the row of COCO id COCO_CATEGORY_IDS[l - 1]
    assert out["rpn.head.cls_logits.bias"].tolist() == [float(i) for i in COCO_CATEGORY_IDS]
    assert torch.equal(out["rpn.head.cls_logits.weight"][0], state["head.classification_head.cls_logits.weight"][1])
    assert out["rpn.head.cls_logits.weight"].shape == (80, 256, 3, 3)
    assert report.required_config["MODEL.FCOS.NUM_CLASSES"] == 81
    assert "largest classifier bias among the dropped rows: 83 (row 83, COCO id 83 is unused ('N/A'), never trained)" \
        in report.notes
    # every source tensor is accounted for exactly once; other tensors are shared, not copied
    sources = [src for src, _ in report.mapped] + [src for src, _ in report.dropped if "[" not in src]
    assert sorted(sources) == sorted(state)
    assert out["backbone.body.stem.conv1.weight"] is state["backbone.body.conv1.weight"]
    assert out["backbone.fpn.fpn_inner2.weight"] is state["backbone.fpn.inner_blocks.0.0.weight"]
    assert all(torch.equal(out[f"rpn.head.scales.{i}.scale"], torch.ones(1)) for i in range(5))


def test_a_fine_tuned_model_of_another_class_count_loads_into_our_detector():
    """torchvision num_classes=5 (index 0 background): rows 1..4 are our labels 1..4, NUM_CLASSES 5."""
    state = _torchvision_state(5)
    out, report = torchvision_fcos_to_detector(state)
    assert out["rpn.head.cls_logits.bias"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert report.required_config["MODEL.FCOS.NUM_CLASSES"] == 5
    assert [src for src, _ in report.dropped if "cls_logits" in src] == ["head.classification_head.cls_logits."
                                                                          "{weight,bias}[0]"]
    cfg = load_config(CONFIG, ["MODEL.WEIGHT", "", "MODEL.FCOS.NUM_CLASSES", 5])
    build_detection_model(cfg).load_state_dict(out, strict=True)


def test_other_state_dicts_are_refused():
    ours = build_detection_model(load_config(CONFIG, ["MODEL.WEIGHT", ""])).state_dict()
    assert not looks_like_torchvision_fcos(ours)
    assert not looks_like_torchvision_fcos({"conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"not a torchvision FCOS state dict: missing backbone\.body\.conv1\.weight"):
        torchvision_fcos_to_detector(ours)
    with pytest.raises(ValueError, match="1 logits"):
        kept_class_rows(1)


def test_the_old_key_mapping_keeps_every_row():
    """imagenet_weights.torchvision_fcos_to_detector (the benchmark's: torchvision built with our class count)
    renames the same keys and takes the classifier as it is."""
    state = _torchvision_state(80)
    old = imagenet_weights.torchvision_fcos_to_detector(state)
    new, _ = torchvision_fcos_to_detector(state)
    assert set(old) == set(new)
    assert torch.equal(old["rpn.head.cls_logits.bias"], state["head.classification_head.cls_logits.bias"])
    assert new["rpn.head.cls_logits.bias"].shape == (79,)
