"""The meta-architecture: backbone (body + FPN) followed by the FCOS module."""
from torch import nn

from fcos_core.structures.image_list import to_image_list


class GeneralizedRCNN(nn.Module):
    """``backbone`` then ``rpn`` (the FCOS module), keeping the original's attribute names.

    forward(images, targets=None):
        images: ImageList, a batched tensor [N, 3, H, W], or a list of [3, H, W] tensors
            (BGR 0-255 minus PIXEL_MEAN, by default), padded to ``size_divisibility``.
        targets: list of BoxList with a "labels" field, needed in training.
    Returns a dict of losses in training and a list of BoxList (fields "scores", "labels")
    in eval mode, in the coordinates of the input images.
    """

    def __init__(self, backbone, rpn, size_divisibility=0):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.size_divisibility = size_divisibility

    def forward(self, images, targets=None):
        if self.training and targets is None:
            raise ValueError("In training mode, targets should be passed")
        images = to_image_list(images, self.size_divisibility)
        features = self.backbone(images.tensors)
        proposals, proposal_losses = self.rpn(images, features, targets)
        if self.training:
            return dict(proposal_losses)
        return proposals
