"""FrozenBatchNorm2d's eps (MODEL.RESNETS.FROZEN_BN_EPS): 0 is the original's formula bit for bit, 1e-5 is
torchvision's FrozenBatchNorm2d; the inference-time folding uses it too."""
from pathlib import Path

import torch
from torch import nn

from fcos_core.config import load_config
from fcos_core.layers.batch_norm import FrozenBatchNorm2d, fuse_conv_bn
from fcos_core.modeling.detector import build_detection_model

ROOT = Path(__file__).resolve().parents[2]


def _randomised(norm, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    norm.weight.copy_(torch.rand(n, generator=g) + 0.5)
    norm.bias.copy_(torch.randn(n, generator=g))
    norm.running_mean.copy_(torch.randn(n, generator=g))
    norm.running_var.copy_(torch.rand(n, generator=g) * 1e-3)  # small: eps 1e-5 matters
    return norm


def test_eps_is_torchvisions_and_zero_is_the_original():
    from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBN

    x = torch.randn(2, 6, 5, 7)
    ours = _randomised(FrozenBatchNorm2d(6, eps=1e-5), 6)
    theirs = _randomised(TorchvisionFrozenBN(6, eps=1e-5), 6)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-5)
    plain = _randomised(FrozenBatchNorm2d(6), 6)
    scale = plain.weight * plain.running_var.rsqrt()
    assert torch.equal(plain.scale_and_shift()[0], scale)  # no eps at all: the original's value
    assert not torch.allclose(plain(x), ours(x), rtol=1e-3)
    assert repr(ours) == "FrozenBatchNorm2d(6, eps=1e-05)" and repr(plain) == "FrozenBatchNorm2d(6)"


def test_folding_uses_eps():
    conv = nn.Conv2d(3, 6, 3, padding=1)
    norm = _randomised(FrozenBatchNorm2d(6, eps=1e-5), 6)
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(fuse_conv_bn(conv, norm)(x), norm(conv(x)), rtol=1e-5, atol=1e-4)


def test_the_config_key_reaches_every_frozen_norm():
    cfg = load_config(str(ROOT / "configs" / "fcos" / "fcos_R_50_FPN_1x.yaml"), ["MODEL.WEIGHT", "", "MODEL.RESNETS.FROZEN_BN_EPS", 1e-5])
    norms = [m for m in build_detection_model(cfg).modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 53 and all(m.eps == 1e-5 for m in norms)
