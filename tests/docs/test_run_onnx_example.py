"""docs/examples/run_onnx.py --torchvision prepares an image as the torchvision-style test pipeline does
(INPUT.RESIZE_STYLE "torchvision", configs/torchvision/fcos_resnet50_fpn_coco.yaml): same size, pixels
within float32 resampling noise, and the factors that map boxes back to the image."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcos_core.data.transforms import inference_transforms, transform_image

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "run_onnx.py"


@pytest.fixture(scope="module")
def run_onnx():
    spec = importlib.util.spec_from_file_location("run_onnx_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("image_size,test_size", [((480, 640), (800, 1333)), ((427, 640), (320, 512)),
                                                  ((300, 1000), (320, 512)), ((200, 230), (320, 512))])
def test_torchvision_preprocessing_is_the_pipeline(run_onnx, image_size, test_size):
    """Upscaled (800 x 1066 from 480 x 640; 320 x 368) and downscaled, also capped by the long side
    (153 x 512 from 300 x 1000, where a rounded scale would give 154)."""
    bgr = np.random.default_rng(0).integers(0, 256, (*image_size, 3), dtype=np.uint8)
    tensor, sx, sy = run_onnx.preprocess_torchvision(bgr, *test_size)
    pipeline = inference_transforms(*test_size, run_onnx.IMAGENET_MEAN, run_onnx.IMAGENET_STD, False, "torchvision")
    expected = transform_image(pipeline, Image.fromarray(bgr[:, :, ::-1])).numpy()
    assert tensor.dtype == np.float32 and tensor.shape == (1, *expected.shape)
    # OpenCV and PyTorch interpolate in float32 with their own rounding: ~2e-4 of a normalised unit
    # (0.01 of a grey level) when downscaling
    np.testing.assert_allclose(tensor[0], expected, atol=1e-3, rtol=0)
    assert (sx, sy) == (image_size[1] / expected.shape[2], image_size[0] / expected.shape[1])
