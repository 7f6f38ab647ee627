"""INPUT.RESIZE_STYLE "torchvision": TensorResize and the pipelines built with it resize as torchvision's
GeneralizedRCNNTransform does, after Normalize."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.transforms import functional as TF

from fcos_core.config import cfg as default_cfg
from fcos_core.data.transforms import Compose, TensorResize, ToTensor, build_transforms, transform_image
from fcos_core.structures.bounding_box import BoxList

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _cfg(*opts):
    c = default_cfg.clone()
    c.merge_from_list(["INPUT.RESIZE_STYLE", "torchvision", "INPUT.TO_BGR255", False, "INPUT.PIXEL_MEAN", MEAN,
                       "INPUT.PIXEL_STD", STD, "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 160, *opts])
    return c


def _pil(h, w, seed=0):
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(480, 640), (640, 427), (300, 1000), (37, 50), (96, 96)])
def test_sizes_and_values_are_torchvisions(size):
    image = TF.to_tensor(_pil(*size))
    theirs = GeneralizedRCNNTransform(96, 160, MEAN, STD).eval()
    expected = theirs.resize(theirs.normalize(image))[0]
    ours = build_transforms(_cfg(), is_train=False)
    assert [type(t).__name__ for t in ours.transforms] == ["ToTensor", "Normalize", "TensorResize"]
    out = transform_image(ours, _pil(*size))
    assert out.shape == expected.shape
    assert torch.equal(out, expected)


def test_training_resizes_the_boxes_by_the_same_ratios():
    c = _cfg("INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 100, "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", 0.0)
    pipeline = build_transforms(c, is_train=True)
    assert [type(t).__name__ for t in pipeline.transforms] == ["ToTensor", "Normalize", "TensorResize"]
    target = BoxList(torch.tensor([[10.0, 20.0, 50.0, 70.0]]), (90, 120), mode="xyxy")
    image, out = pipeline(_pil(120, 90), target)
    assert image.shape == (3, 85, 64)  # scale min(64 / 90, 100 / 120) = 0.711: floor(120 s) = 85
    ratio_w, ratio_h = 64 / 90, 85 / 120
    torch.testing.assert_close(out.bbox, torch.tensor([[10 * ratio_w, 20 * ratio_h, 50 * ratio_w, 70 * ratio_h]]))
    assert out.size == (64, 85)


def test_training_draws_a_size_and_jitters_the_scale():
    resize = TensorResize((50, 100), None, scale_range=(0.5, 0.5))
    sizes = {resize(torch.zeros(3, 40, 80)).shape[-2] for _ in range(30)}
    assert sizes == {25, 50}  # short side 50 or 100, times 0.5


def test_an_unknown_style_names_the_key():
    with pytest.raises(ValueError, match="INPUT.RESIZE_STYLE"):
        build_transforms(_cfg("INPUT.RESIZE_STYLE", "pillow"), is_train=False)
    with pytest.raises(ValueError, match="INPUT.RESIZE_STYLE"):
        build_transforms(_cfg("INPUT.RESIZE_STYLE", "pillow"), is_train=True)


def test_the_original_style_is_unchanged():
    c = default_cfg.clone()
    assert c.INPUT.RESIZE_STYLE == "original"
    assert [type(t).__name__ for t in build_transforms(c, is_train=False).transforms] == ["Resize", "ToTensor",
                                                                                          "Normalize"]


def test_a_bare_image_goes_through_the_pipeline():
    out = transform_image(Compose([ToTensor(), TensorResize(20, 40)]), _pil(10, 15))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 20, 30)
