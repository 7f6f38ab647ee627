"""INPUT.RESIZE_BACKEND "tensor": the original's Resize done by torch on the uint8 image gives the sizes,
boxes and random draws of PIL's resize and pixels within 2 grey levels; the pipelines take it."""
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from fcos_core.config import load_config
from fcos_core.data.transforms import Resize, build_transforms
from fcos_core.structures.bounding_box import BoxList


def _image(h, w, seed=0, mode="RGB"):
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (h, w, 3)).astype(np.uint8)).convert(mode)


def _target(w, h):
    target = BoxList(torch.tensor([[3.0, 4.0, 20.0, 30.0], [0.0, 0.0, w - 1.0, h - 1.0]]), (w, h), mode="xyxy")
    target.add_field("labels", torch.tensor([1, 2]))
    return target


@pytest.mark.parametrize("hw,min_size,max_size", [((480, 640), 800, 1333), ((640, 427), 800, 1333),
                                                   ((1000, 1500), 600, 1000), ((300, 1000), 400, 1333),
                                                   ((37, 50), 96, 160), ((2000, 300), 200, 1333)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_tensor_backend_is_pils_resize_within_two_grey_levels(hw, min_size, max_size, mode):
    image = _image(*hw, mode=mode)
    w, h = image.size
    pil_image, pil_target = Resize(min_size, max_size)(image, _target(w, h))
    out, target = Resize(min_size, max_size, backend="tensor")(image, _target(w, h))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
    reference = F.pil_to_tensor(pil_image)
    assert out.shape == reference.shape  # the same integer sizes
    assert (out.int() - reference.int()).abs().max() <= 2
    assert target.size == pil_target.size and torch.equal(target.bbox, pil_target.bbox)


def test_tensor_backend_keeps_the_random_draws():
    resize_pil = Resize((100, 120, 140), 1000, scale_range=(0.5, 1.5))
    resize_tensor = Resize((100, 120, 140), 1000, scale_range=(0.5, 1.5), backend="tensor")
    image = _image(60, 80)
    random.seed(3)
    sizes_pil = [resize_pil(image).size[::-1] for _ in range(5)]
    random.seed(3)
    sizes_tensor = [tuple(resize_tensor(image).shape[-2:]) for _ in range(5)]
    assert sizes_pil == sizes_tensor and len(set(sizes_pil)) > 1


def test_a_tensor_input_is_resized_as_before():
    image = F.to_tensor(_image(40, 60))
    assert torch.equal(Resize(80, 200, backend="tensor")(image), Resize(80, 200)(image))


def _cfg(backend, *opts):
    return load_config(opts=["INPUT.RESIZE_BACKEND", backend, "INPUT.MIN_SIZE_TRAIN", (64,),
                             "INPUT.MAX_SIZE_TRAIN", 100, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 100,
                             *opts])


@pytest.mark.parametrize("is_train", [True, False])
@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_pipelines_with_the_tensor_backend_match_pil_within_two_levels(is_train, flip):
    image = _image(48, 64, seed=1)
    outputs = []
    for backend in ("pil", "tensor"):
        pipeline = build_transforms(_cfg(backend, "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", flip), is_train)
        names = [type(t).__name__ for t in pipeline.transforms]
        assert names == (["Resize", "RandomHorizontalFlip", "ToTensor", "Normalize"] if is_train and flip
                         else ["Resize", "ToTensor", "Normalize"])
        outputs.append(pipeline(image, _target(64, 48)))
    (pil_image, pil_target), (tensor_image, tensor_target) = outputs
    assert tensor_image.shape == pil_image.shape == (3, 64, 85) and tensor_image.dtype == torch.float32
    assert (tensor_image - pil_image).abs().max() <= 2.0  # BGR 0-255 units
    assert torch.equal(tensor_target.bbox, pil_target.bbox)


def test_bad_backend_and_pil_only_degradations_name_the_key():
    with pytest.raises(ValueError, match="INPUT.RESIZE_BACKEND must be one of"):
        build_transforms(_cfg("cv2"), is_train=True)
    with pytest.raises(ValueError, match="INPUT.RESIZE_BACKEND 'tensor'.*RandomGaussianBlur"):
        build_transforms(_cfg("tensor", "INPUT.BLUR_PROB_TRAIN", 0.5), is_train=True)
    # the torchvision style resizes the normalised tensor: the degradations still see PIL images
    build_transforms(_cfg("tensor", "INPUT.BLUR_PROB_TRAIN", 0.5, "INPUT.RESIZE_STYLE", "torchvision"), True)
