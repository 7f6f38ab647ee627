"""FrozenBatchNorm2d: BatchNorm2d with fixed statistics and affine parameters (all buffers).

Used in the ResNet backbones of maskrcnn-benchmark / FCOS (configs with MODEL.RESNETS.*, e.g.
``FCOS_R_50_FPN_1x``): ImageNet MSRA weights are loaded and their batch norm is never updated.
As the original it has NO epsilon: scale = weight / sqrt(running_var). State-dict keys
``weight``, ``bias``, ``running_mean``, ``running_var`` (see spec/R_50_FPN.keys.tsv).
"""
import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """y = (x - running_mean) * weight / sqrt(running_var) + bias, per channel, no epsilon.

    Input x: Tensor[B, n, H, W], any floating dtype and memory format; the output has x's dtype
    (the per-channel scale and bias are folded in the buffers' float32 and then cast).
    """

    def __init__(self, n):
        super(FrozenBatchNorm2d, self).__init__()
        self.num_features = n
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x):
        scale = self.weight * self.running_var.rsqrt()
        bias = self.bias - self.running_mean * scale
        scale = scale.reshape(1, -1, 1, 1).to(x.dtype)
        bias = bias.reshape(1, -1, 1, 1).to(x.dtype)
        return x.mul(scale).add_(bias)  # one output tensor instead of two

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # state dicts of torch.nn.BatchNorm2d (e.g. torchvision ResNets) carry a counter we do not keep
        state_dict.pop(prefix + "num_batches_tracked", None)
        super(FrozenBatchNorm2d, self)._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def __repr__(self):
        return "{}({})".format(self.__class__.__name__, self.num_features)
