"""DemoTransform follows INPUT.RESIZE_STYLE through the data pipeline's own test transforms."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fcos_core.config import cfg as default_cfg
from fcos_core.data.transforms import build_transforms, transform_image
from fcos_core.engine.predictor import DemoTransform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize("style", ["original", "torchvision"])
def test_the_demo_transform_is_the_test_pipeline(style):
    c = default_cfg.clone()
    c.merge_from_list(["INPUT.RESIZE_STYLE", style, "INPUT.TO_BGR255", False, "INPUT.PIXEL_MEAN", MEAN,
                       "INPUT.PIXEL_STD", STD, "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 160])
    bgr = np.random.RandomState(3).randint(0, 256, (120, 90, 3), dtype=np.uint8)
    demo = DemoTransform(96, 160, MEAN, STD, to_bgr255=False, resize_style=style)
    rgb = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    expected = transform_image(build_transforms(c, is_train=False), rgb)
    assert torch.equal(demo(bgr), expected)
    assert expected.shape == (3, 128, 96)  # 96 / 90 = 1.067: 120 -> 128 in both styles
    assert ("TensorResize" in repr(demo)) == (style == "torchvision")
