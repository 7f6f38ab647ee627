"""ToTensor and Normalize (fcos_core/data/transforms/transforms.py) give the values of torchvision's
``to_tensor`` and ``normalize`` bit for bit (their faster in-place forms must not change a pixel),
and never change their input."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from fcos_core.data.transforms import Normalize, ToTensor


def _image(mode, seed=0):
    rng = np.random.RandomState(seed)
    shape = (37, 53, 3) if mode == "RGB" else (37, 53)
    return Image.fromarray(rng.randint(0, 256, shape).astype(np.uint8)).convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "1", "I;16"])
def test_to_tensor_is_torchvisions_bit_for_bit(mode):
    image = _image(mode)
    expected = F.to_tensor(image)
    out, target = ToTensor()(image, "target")
    assert target == "target"
    assert out.dtype == expected.dtype and out.shape == expected.shape and torch.equal(out, expected)


def test_every_uint8_value_round_trips_through_to_tensor_and_bgr255():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([values, values[::-1], values.T], axis=-1))
    bgr = Normalize(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], to_bgr255=True)(ToTensor()(image, None)[0])
    assert torch.equal(bgr, torch.from_numpy(np.asarray(image)[:, :, ::-1].copy()).permute(2, 0, 1).float())


@pytest.mark.parametrize("to_bgr255,mean,std", [
    (True, [102.9801, 115.9465, 122.7717], [1.0, 1.0, 1.0]),
    (True, [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]),
    (False, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
])
def test_normalize_is_the_reference_bit_for_bit_and_leaves_its_input(to_bgr255, mean, std):
    image = F.to_tensor(_image("RGB", seed=1))
    before = image.clone()
    reference = image[[2, 1, 0]] * 255 if to_bgr255 else image
    expected = F.normalize(reference, mean=mean, std=std)
    out = Normalize(mean=mean, std=std, to_bgr255=to_bgr255)(image)
    assert torch.equal(out, expected)
    assert torch.equal(image, before) and out.data_ptr() != image.data_ptr()
