"""3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3), for CPU inference.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), section 4: with a 6x6
input tile ``d``, a 3x3 filter ``g`` and the interpolation points 0, 1, -1, 2, -2 and infinity, the
4x4 output tile is

    Y = A^T [ (G g G^T) * (B^T d B) ] A            (* elementwise over the 36 components)

so a tile costs 36 multiplications per (input, output) channel pair instead of 4 * 4 * 9 = 144: the
per-component products are 36 GEMMs of [tiles, Cin] x [Cin, Cout]. ``G g G^T`` is computed once per
weight (:func:`winograd_filter_transform`); the compiled kernel (csrc/winograd) transforms the input
tiles, runs the GEMMs and transforms back, in cache-sized chunks of tiles. In float32 the result
differs from the direct convolution by a few 1e-5 relative (the transforms' constants up to 8 and 1/6
round); FCOS's AP on shapes_val is unchanged (docs/deployment.md). TEST.WINOGRAD turns it on for
``tools/test_net.py``, COCODemo and the demos (fcos_core/engine/inference.py).

Every function takes NCHW tensors; the kernel returns channels_last, the reference contiguous.
"""
import warnings

import torch
import torch.nn.functional as F

from fcos_core.layers import _extension

__all__ = ["WinogradConv2d", "winograd_conv3x3", "winograd_conv3x3_reference", "winograd_filter_transform",
           "winograd_convs_for_inference"]

_OP = "winograd_conv3x3"

# Lavin & Gray's F(4x4, 3x3) matrices (points 0, 1, -1, 2, -2, inf).
_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))


def winograd_filter_transform(weight):
    """``G g G^T`` of every filter: weight [Cout, Cin, 3, 3] -> [36, Cin, Cout] in weight's dtype.

    Computed in float64 and rounded once, so float32 filters lose nothing more than that rounding.
    """
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"winograd_filter_transform: weight must be [Cout, Cin, 3, 3], got {tuple(weight.shape)}")
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ak,oikl,bl->abio", g, weight.detach().double(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def winograd_conv3x3_reference(input, weight_wino, bias=None, relu=False):
    """Pure-PyTorch F(4x4, 3x3): input [N, Cin, H, W], weight_wino [36, Cin, Cout] -> [N, Cout, H, W].

    The same algorithm as the kernel (zero padding 1, tiles of 4x4 outputs), one einsum per
    transform; the tests hold the kernel to it.
    """
    n, cin, h, w = input.shape
    th, tw = (h + 3) // 4, (w + 3) // 4
    bt = torch.tensor(_BT, dtype=input.dtype, device=input.device)
    at = torch.tensor(_AT, dtype=input.dtype, device=input.device)
    padded = F.pad(input, (1, 4 * tw + 1 - w, 1, 4 * th + 1 - h))
    tiles = padded.unfold(2, 6, 4).unfold(3, 6, 4)  # [N, Cin, th, tw, 6, 6]
    v = torch.einsum("ai,nchwij,bj->abnhwc", bt, tiles, bt).reshape(36, n * th * tw, cin)
    m = torch.bmm(v, weight_wino).reshape(6, 6, n, th, tw, -1)
    y = torch.einsum("pa,abnhwo,qb->nohpwq", at, m, at).reshape(n, -1, 4 * th, 4 * tw)[:, :, :h, :w]
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y.clamp_min(0) if relu else y.contiguous()


def winograd_conv3x3(input, weight_wino, bias=None, relu=False):
    """3x3, stride 1, padding 1 convolution (then ReLU if ``relu``) with transformed filters.

    input [N, Cin, H, W] float32/float64, weight_wino [36, Cin, Cout] from
    :func:`winograd_filter_transform`, bias [Cout] or None -> [N, Cout, H, W]. Runs the compiled
    kernel when built for the device, else the reference (with a warning once). No gradient.
    """
    if input.dim() != 4 or weight_wino.dim() != 3 or weight_wino.shape[:2] != (36, input.shape[1]):
        raise ValueError(f"winograd_conv3x3: input [N, C, H, W] and weight_wino [36, C, Cout] expected, got "
                         f"{tuple(input.shape)} and {tuple(weight_wino.shape)}")
    if torch.compiler.is_compiling():  # dynamo cannot trace the dispatcher query; only CPU kernels exist
        kernel = _extension.extension_loaded() and input.device.type == "cpu"
    else:
        kernel = _extension.has_kernel(_OP, input.device.type)
    if kernel:
        return _extension.op(_OP)(input, weight_wino, bias, relu)
    _extension.warn_fallback(_OP, input.device.type)
    return winograd_conv3x3_reference(input, weight_wino, bias, relu)


if _extension.extension_loaded():
    @torch.library.register_fake(f"{_extension.NAMESPACE}::{_OP}")
    def _winograd_conv3x3_fake(input, weight_wino, bias=None, relu=False):
        # Shapes for torch.compile (TEST.COMPILE traces through the op as one extern call).
        n, _, h, w = input.shape
        return input.new_empty((n, weight_wino.shape[2], h, w)).contiguous(memory_format=torch.channels_last)


class WinogradConv2d(torch.nn.Module):
    """An inference-only stand-in for a 3x3, stride 1, padding 1, ungrouped ``nn.Conv2d``.

    Holds ``weight_wino`` [36, Cin, Cout] and ``bias`` [Cout] (or None) as buffers; made by
    :meth:`from_conv`. Its state dict is not a checkpoint's: it is never trained or saved.
    """

    def __init__(self, weight_wino, bias=None, relu=False):
        super().__init__()
        self.register_buffer("weight_wino", weight_wino)
        self.register_buffer("bias", bias)
        self.in_channels, self.out_channels = weight_wino.shape[1], weight_wino.shape[2]
        self.relu = relu

    @staticmethod
    def supports(conv):
        """Whether ``conv`` is an ``nn.Conv2d`` this module computes exactly (up to rounding)."""
        return (type(conv) is torch.nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
                and conv.padding_mode == "zeros" and conv.weight.dtype in (torch.float32, torch.float64))

    @classmethod
    def from_conv(cls, conv):
        """The Winograd form of ``conv`` (see :meth:`supports`); ValueError otherwise."""
        if not cls.supports(conv):
            raise ValueError(f"WinogradConv2d: only nn.Conv2d 3x3 / stride 1 / padding 1 / dilation 1 / "
                             f"groups 1 / zeros padding in float32 or float64 is supported, got {conv}")
        bias = conv.bias.detach().clone() if conv.bias is not None else None
        return cls(winograd_filter_transform(conv.weight), bias)

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("WinogradConv2d is for inference only (TEST.WINOGRAD): it has no backward")
        return winograd_conv3x3(x, self.weight_wino, self.bias, self.relu)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), F(4x4, 3x3), relu={self.relu}"


def winograd_convs_for_inference(model):
    """Replace, in place, every convolution of ``model`` that :class:`WinogradConv2d` supports.

    Returns the number replaced; a model without any is a ValueError (TEST.WINOGRAD would do nothing).
    Call it on a copy made for inference (fcos_core.engine.inference.prepare_for_inference).
    """
    targets = [(name, mod) for name, mod in model.named_modules() if WinogradConv2d.supports(mod)]
    if not targets:
        raise ValueError("TEST.WINOGRAD: the model has no 3x3 stride-1 convolution to run by Winograd")
    for name, conv in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, WinogradConv2d.from_conv(conv))
    if not _extension.has_kernel(_OP, "cpu"):
        warnings.warn("TEST.WINOGRAD: the compiled kernel is missing, the pure-PyTorch reference runs (slower "
                      f"than the direct convolution). Build it with: {_extension.BUILD_COMMAND}", RuntimeWarning)
    return len(targets)
