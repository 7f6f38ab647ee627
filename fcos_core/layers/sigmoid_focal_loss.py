"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

FCOS (Tian et al. 2019, Sec. 3.1, Eq. 2) trains its classification branch with it: C binary classifiers,
alpha 0.25, gamma 2, summed over all locations and divided by the number of positive locations
(the division happens in the FCOS loss, not here).

For logits ``x`` [N, C] and labels ``t`` [N] with values in 0..C, ``p = sigmoid(x)``:

* column ``c`` of row ``n`` is positive when ``t[n] == c + 1``:
  ``-alpha * (1 - p)**gamma * log(p)``;
* every other column of a row with ``t[n] >= 0`` is negative (label 0 is background, so all its
  columns are negative): ``-(1 - alpha) * p**gamma * log(1 - p)``;
* rows with ``t[n] < 0`` are ignored entirely (no loss, zero gradient).

Labels above C have no positive column and act as background. The loss is returned summed, a 0-dim
tensor, as the original ``SigmoidFocalLoss`` module did. The compiled kernels (csrc/sigmoid_focal_loss)
never materialise an [N, C] intermediate in the forward pass.
"""
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from fcos_core.layers import _extension

__all__ = ["sigmoid_focal_loss", "sigmoid_focal_loss_reference", "SigmoidFocalLoss"]


def _check_inputs(logits, labels):
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [N, C], got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if labels.dim() != 1 or labels.size(0) != logits.size(0):
        raise ValueError(f"labels must have shape [N] = [{logits.size(0)}], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (0 = background, 1..C classes), got {labels.dtype}")
    if labels.device != logits.device:
        raise ValueError(f"logits and labels must be on one device, got {logits.device} and {labels.device}")


def sigmoid_focal_loss_reference(logits, labels, gamma, alpha):
    """Pure-PyTorch sigmoid focal loss summed over all elements (the kernels' definition).

    Args:
        logits (Tensor[N, C]): classification logits, any floating dtype (float16/bfloat16 are
            computed in float32).
        labels (Tensor[N]): integer labels, 0 = background, c in 1..C = column c-1 positive,
            negative values = ignored row.
        gamma (float): focusing parameter (2 in FCOS).
        alpha (float): weight of the positive term, 1 - alpha of the negative one (0.25 in FCOS).

    Returns:
        Tensor[] (0-dim, dtype of logits): the summed loss. Differentiable with autograd.

    Lin et al. 2017, Eq. 5 with the sigmoid (binary) form; FCOS paper Sec. 3.1 (Eq. 2).
    """
    _check_inputs(logits, labels)
    x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    num_classes = x.size(1)
    classes = torch.arange(1, num_classes + 1, device=x.device, dtype=labels.dtype)
    pos = labels[:, None] == classes[None, :]
    neg = (labels[:, None] >= 0) & ~pos
    p = torch.sigmoid(x)
    # log(p) = logsigmoid(x), log(1 - p) = logsigmoid(-x): stable for large |x|.
    pos_loss = -alpha * (1 - p).pow(gamma) * F.logsigmoid(x)
    neg_loss = -(1 - alpha) * p.pow(gamma) * F.logsigmoid(-x)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    loss = torch.where(pos, pos_loss, torch.where(neg, neg_loss, zero))
    return loss.sum().to(logits.dtype)


class _SigmoidFocalLoss(torch.autograd.Function):
    """The compiled kernels as an autograd Function; saves only ``logits`` and ``labels``."""

    @staticmethod
    def forward(ctx, logits, labels, gamma, alpha):
        ctx.save_for_backward(logits, labels)
        ctx.gamma = float(gamma)
        ctx.alpha = float(alpha)
        return _extension.op("sigmoid_focal_loss_forward")(logits, labels, ctx.gamma, ctx.alpha)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        logits, labels = ctx.saved_tensors
        grad = _extension.op("sigmoid_focal_loss_backward")(
            logits, labels, grad_output.contiguous(), ctx.gamma, ctx.alpha
        )
        return grad, None, None, None


def sigmoid_focal_loss(logits, labels, gamma, alpha):
    """Sigmoid focal loss summed to a 0-dim tensor, with the compiled kernels when available.

    Args:
        logits (Tensor[N, C]): classification logits (float16, bfloat16, float32, float64); may be
            non-contiguous.
        labels (Tensor[N]): integer labels, 0 = background, c in 1..C = column c-1 positive,
            negative = ignored row.
        gamma (float): focusing parameter (2 in FCOS).
        alpha (float): positive-term weight (0.25 in FCOS).

    Returns:
        Tensor[] (dtype of logits): sum of the per-element losses, differentiable w.r.t. logits.
        Without a kernel for the device, :func:`sigmoid_focal_loss_reference` runs after a one-time
        RuntimeWarning.

    Lin et al. 2017 (focal loss); FCOS paper Sec. 3.1 (Eq. 2) for its use.
    """
    _check_inputs(logits, labels)
    device_type = logits.device.type
    if _extension.has_kernel("sigmoid_focal_loss_forward", device_type) and _extension.has_kernel(
        "sigmoid_focal_loss_backward", device_type
    ):
        return _SigmoidFocalLoss.apply(logits, labels, gamma, alpha)
    _extension.warn_fallback("sigmoid_focal_loss", device_type)
    return sigmoid_focal_loss_reference(logits, labels, gamma, alpha)


class SigmoidFocalLoss(nn.Module):
    """Sigmoid focal loss module, the original maskrcnn-benchmark/FCOS interface.

    Args:
        gamma (float): focusing parameter (FCOS: 2.0).
        alpha (float): positive-term weight (FCOS: 0.25).

    ``forward(logits [N, C], targets [N] int)`` returns the summed loss (0-dim); see
    :func:`sigmoid_focal_loss` for the label convention.
    """

    def __init__(self, gamma, alpha):
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits, targets):
        """Summed focal loss of ``logits`` [N, C] against integer ``targets`` [N] (0 = background)."""
        return sigmoid_focal_loss(logits, targets, self.gamma, self.alpha)

    def __repr__(self):
        return f"{self.__class__.__name__}(gamma={self.gamma}, alpha={self.alpha})"
