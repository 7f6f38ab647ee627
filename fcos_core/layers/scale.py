"""Scale: one learnable scalar multiplying its input.

FCOS (Tian et al., ICCV 2019, Sec. 3.2) shares the regression head across FPN levels and gives each
level its own trainable scalar s_i, so the box output is exp(s_i * x) (or relu(s_i * x) with
NORM_REG_TARGETS). The head holds one per level in ``scales``; state-dict key ``rpn.head.scales.<i>.scale``,
shape [1].
"""
import torch
from torch import nn


class Scale(nn.Module):
    """``input * scale`` with ``scale`` a learnable float32 parameter of shape [1] (init ``init_value``)."""

    def __init__(self, init_value=1.0):
        super(Scale, self).__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)], dtype=torch.float32))

    def forward(self, input):
        return input * self.scale

    def extra_repr(self):
        return "scale={:.6g}".format(float(self.scale.detach()[0]))
