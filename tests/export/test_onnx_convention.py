"""The export's post-processing follows MODEL.FCOS.CONVENTION: torchvision's anchor centres computed
from (possibly traced) sizes, the configuration read by one ``make_export_postprocessor``, a
post-processor that does not fit the model refused, and the continuous-IoU NMS as exported.

onnxruntime against PyTorch on whole detectors of either convention: tests/export/test_onnx_export.py.
"""
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from fcos_core.config import load_config
from fcos_core.export.onnx import ExportableFCOS
from fcos_core.export.postprocess import make_export_postprocessor, per_class_nms
from fcos_core.layers import ml_nms
from fcos_core.modeling.detector import build_detection_model
from fcos_core.modeling.rpn.fcos.target_assignment import torchvision_locations_per_level

ROOT = Path(__file__).resolve().parents[2]
TORCHVISION = str(ROOT / "configs" / "torchvision" / "fcos_resnet50_fpn_coco.yaml")
QUICKSTART = str(ROOT / "configs" / "quickstart" / "fcos_shapes.yaml")


def test_torchvision_locations_follow_traced_sizes():
    """The export's locations: sizes taken from the input's shape while tracing stay in the graph, so a
    trace at one size gives the locations of another (800 x 1216: 13 rows of P6, 61 px apart)."""
    def locations(image):
        return torchvision_locations_per_level(image.shape[2] // 64 + 1, image.shape[3] // 64 + 1,
                                               (image.shape[2], image.shape[3]))

    traced = torch.jit.trace(locations, torch.zeros(1, 1, 192, 256))
    for size in ((800, 1216), (224, 320)):
        fh, fw = size[0] // 64 + 1, size[1] // 64 + 1
        got = traced(torch.zeros(1, 1, *size))
        assert got.dtype == torch.float32 and got.shape == (fh * fw, 2)
        assert torch.equal(got, torchvision_locations_per_level(fh, fw, size))
    assert traced(torch.zeros(1, 1, 800, 1216))[20].tolist() == [0, 61]  # the first cell of P6's second row


def test_make_export_postprocessor_reads_the_config():
    tv = make_export_postprocessor(load_config(TORCHVISION))
    assert (tv.convention, tv.pre_nms_thresh, tv.pre_nms_top_n, tv.nms_thresh, tv.detections_per_img,
            tv.num_classes, tv.fpn_strides) == ("torchvision", 0.2, 1000, 0.6, 100, 81, [8, 16, 32, 64, 128])
    assert not tv.legacy
    original = make_export_postprocessor(load_config(QUICKSTART))
    assert original.convention == "original" and original.legacy and original.num_classes == 7
    with pytest.raises(ValueError, match=r"MODEL\.FCOS\.CONVENTION must be one of .*'tv'"):
        make_export_postprocessor(load_config(QUICKSTART, ["MODEL.FCOS.CONVENTION", "tv"]))


def test_a_post_processor_that_does_not_fit_the_model_is_refused():
    tiny = ["MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "1"]
    model = build_detection_model(load_config(QUICKSTART, tiny + ["MODEL.FCOS.CONVENTION", "torchvision"])).eval()
    with pytest.raises(ValueError, match=r"MODEL\.FCOS\.CONVENTION 'original' \(the model has 'torchvision'\)"):
        ExportableFCOS(model, make_export_postprocessor(load_config(QUICKSTART, tiny)))
    with pytest.raises(ValueError, match=r"MODEL\.FCOS\.NUM_CLASSES 81 \(the model has 7\)"):
        ExportableFCOS(model, make_export_postprocessor(load_config(TORCHVISION)))
    fits = ExportableFCOS(model, make_export_postprocessor(load_config(QUICKSTART, tiny + [
        "MODEL.FCOS.CONVENTION", "torchvision"])))
    with torch.no_grad():
        boxes, scores, labels = fits(torch.zeros(1, 3, 64, 96))
    assert boxes.shape[1] == 4 and len(boxes) == len(scores) == len(labels)


class _NMS(torch.nn.Module):
    def __init__(self, legacy):
        super().__init__()
        self.legacy = legacy

    def forward(self, boxes, scores, labels):
        return per_class_nms(boxes, scores, labels, 3, 0.5, legacy=self.legacy)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy_plus_one", "continuous"])
def test_exported_nms_equals_ml_nms_of_its_convention(tmp_path, legacy):
    """The exported class-aware NMS == ml_nms with the same IoU rule (original: widths x2 - x1 + 1;
    torchvision: x2 - x1), on small integer boxes where the +1 changes many decisions."""
    gen = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 12, (300, 2), generator=gen).float()
    boxes = torch.cat((xy, xy + torch.randint(0, 5, (300, 2), generator=gen)), dim=1)
    scores = torch.rand(300, generator=gen) + 0.01
    labels = torch.randint(1, 4, (300,), generator=gen)
    path = tmp_path / "nms.onnx"
    torch.onnx.export(_NMS(legacy), (boxes, scores, labels), str(path), dynamo=False, opset_version=17,
                      input_names=["boxes", "scores", "labels"], dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"},
                                                                               "labels": {0: "n"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = set(session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()})[0])
    same = set(ml_nms(boxes, scores, labels, 0.5, legacy=legacy).tolist())
    other = set(ml_nms(boxes, scores, labels, 0.5, legacy=not legacy).tolist())
    assert got == same
    assert same != other  # the data does tell the two conventions apart

