"""The FCOS head and module (Sec. 3.1-3.3, Fig. 2).

``FCOSHead`` runs the shared towers on every FPN level and predicts, per location, C class
logits, 4 box distances and one centerness logit. ``FCOSModule`` adds the locations, the loss
in training (:mod:`.loss`) and the post-processing at test time (:mod:`.inference`).
"""
import math

import torch
from torch import nn

from fcos_core.layers.dcn import DFConv2d
from fcos_core.layers.group_norm import GroupNorm
from fcos_core.layers.norm_relu_conv import norm_relu_conv
from fcos_core.layers.scale import Scale

from .inference import make_fcos_postprocessor
from .loss import make_fcos_loss_evaluator
from .conventions import CONVENTIONS, check_convention  # noqa: F401 (CONVENTIONS: re-exported)
from .target_assignment import compute_locations_per_level, torchvision_locations_per_level


def _tower(in_channels, num_convs, use_dcn_last):
    """``num_convs`` x (conv3x3, GroupNorm(32), ReLU); the last conv deformable if asked.

    The indices of the Sequential (conv at 0, 3, 6, ...; GN at 1, 4, ...) are the state-dict
    keys of the released checkpoints (``rpn.head.cls_tower.0.weight``, ...).
    """
    layers = []
    for i in range(num_convs):
        if use_dcn_last and i == num_convs - 1:
            conv = DFConv2d(in_channels, in_channels, with_modulated_dcn=True, kernel_size=3, stride=1, bias=True)
        else:
            conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1, bias=True)
        layers += [conv, GroupNorm(32, in_channels), nn.ReLU()]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Classification, box regression and centerness branches shared by all FPN levels.

    Args:
        in_channels: FPN channels (256).
        num_classes: foreground classes C (MODEL.FCOS.NUM_CLASSES - 1).
        num_levels: number of FPN levels (one learnable Scale each, Sec. 3.2).
        fpn_strides: stride of each level; with ``norm_reg_targets`` the test-time distances
            are multiplied by it.
        num_convs: convs per tower (MODEL.FCOS.NUM_CONVS, 4).
        prior_prob: initial foreground probability of the classifier (0.01, as RetinaNet).
        centerness_on_reg: centerness branch on the regression tower (an ``imprv`` trick).
        norm_reg_targets: predict stride-normalised distances with ReLU instead of exp.
        use_dcn_in_tower: last conv of each tower deformable.
        recompute_tower_norm: in training, keep only each tower norm's input for the backward
            pass and recompute its GroupNorm + ReLU there (:func:`norm_relu_conv`): the towers'
            saved activations halve for ~1% more compute, same results (MODEL.FCOS.RECOMPUTE_TOWER_NORM).
            Towers with a deformable conv run plainly.

    forward(features): list over levels of [N, in_channels, H_l, W_l] -> (logits, bbox_reg,
    centerness): lists over levels of [N, C, H_l, W_l], [N, 4, H_l, W_l] (pixels at test time,
    and in training unless ``norm_reg_targets``), [N, 1, H_l, W_l].
    """

    def __init__(
        self,
        in_channels,
        num_classes,
        fpn_strides,
        num_convs=4,
        prior_prob=0.01,
        centerness_on_reg=False,
        norm_reg_targets=False,
        use_dcn_in_tower=False,
        recompute_tower_norm=True,
    ):
        super().__init__()
        self.fpn_strides = list(fpn_strides)
        self.recompute_tower_norm = recompute_tower_norm
        self.centerness_on_reg = centerness_on_reg
        self.norm_reg_targets = norm_reg_targets
        self.cls_tower = _tower(in_channels, num_convs, use_dcn_in_tower)
        self.bbox_tower = _tower(in_channels, num_convs, use_dcn_in_tower)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, kernel_size=3, stride=1, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, kernel_size=3, stride=1, padding=1)
        self.scales = nn.ModuleList([Scale(init_value=1.0) for _ in self.fpn_strides])
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob):
        for module in [self.cls_tower, self.bbox_tower, self.cls_logits, self.bbox_pred, self.centerness]:
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, std=0.01)
                    if layer.bias is not None:
                        nn.init.constant_(layer.bias, 0)
        # Focal loss initialisation (RetinaNet Sec. 4.1): every location starts at prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features):
        logits, bbox_reg, centerness = [], [], []
        for level, feature in enumerate(features):
            on_reg = self.centerness_on_reg
            cls_out = self._tower_then(self.cls_tower, feature, [self.cls_logits] + ([] if on_reg else [self.centerness]))
            box_out = self._tower_then(self.bbox_tower, feature, [self.bbox_pred] + ([self.centerness] if on_reg else []))
            logits.append(cls_out[0])
            centerness.append(box_out[1] if on_reg else cls_out[1])
            bbox_pred = self.scales[level](box_out[0])
            if self.norm_reg_targets:
                bbox_pred = torch.relu(bbox_pred)
                bbox_reg.append(bbox_pred if self.training else bbox_pred * self.fpn_strides[level])
            else:
                bbox_reg.append(torch.exp(bbox_pred))
        return logits, bbox_reg, centerness

    def _tower_then(self, tower, x, predictors):
        """``[p(tower(x)) for p in predictors]``; while gradients are computed and with
        ``recompute_tower_norm``, each norm + ReLU + following conv(s) runs as one
        :func:`norm_relu_conv` (the tower's layers are ``[conv, norm, ReLU] * num_convs``)."""
        convs = list(tower)[0::3]
        if not (self.recompute_tower_norm and torch.is_grad_enabled() and all(type(c) is nn.Conv2d for c in convs)):
            out = tower(x)
            return [p(out) for p in predictors]
        norms = list(tower)[1::3]
        y = convs[0](x)
        for norm, conv in zip(norms[:-1], convs[1:]):
            (y,) = norm_relu_conv(y, norm, [conv])
        return norm_relu_conv(y, norms[-1], predictors)


class FCOSModule(nn.Module):
    """Head + locations + loss (training) or post-processing (test).

    forward(images: ImageList, features: list of [N, C_fpn, H_l, W_l], targets=None) returns
    ``(None, {"loss_cls", "loss_reg", "loss_centerness"})`` in training and
    ``(list[BoxList], {})`` at test time, as the original.

    ``convention`` (MODEL.FCOS.CONVENTION) places the locations: "original" at ``(j * s + s // 2,
    i * s + s // 2)`` with the level's FPN stride ``s``; "torchvision" as torchvision's FCOS, at
    ``(j * (W_pad // W_l), i * (H_pad // H_l))`` from the padded batch size (training and test).
    """

    def __init__(self, head, loss_evaluator, box_selector_test, fpn_strides, convention="original"):
        super().__init__()
        check_convention(convention)
        self.head = head
        self.loss_evaluator = loss_evaluator
        self.box_selector_test = box_selector_test
        self.fpn_strides = list(fpn_strides)
        self.convention = convention
        self._locations_cache = {}

    def forward(self, images, features, targets=None):
        box_cls, box_regression, centerness = self.head(features)
        locations = self.compute_locations(features, tuple(images.tensors.shape[-2:]))
        if self.training:
            if targets is None:
                raise ValueError("FCOSModule in training mode needs targets (a list of BoxList)")
            loss_cls, loss_reg, loss_ctr = self.loss_evaluator(locations, box_cls, box_regression, centerness, targets)
            return None, {"loss_cls": loss_cls, "loss_reg": loss_reg, "loss_centerness": loss_ctr}
        boxes = self.box_selector_test(locations, box_cls, box_regression, centerness, images.image_sizes)
        return boxes, {}

    def compute_locations(self, features, padded_size=None):
        """Locations of every level (list of [H_l W_l, 2]), cached per feature size and device.

        ``padded_size``: (H_pad, W_pad) of the batch tensor, needed by the "torchvision" convention only.
        """
        locations = []
        for level, feature in enumerate(features):
            h, w = feature.shape[-2:]
            torchvision_style = self.convention == "torchvision"
            if torchvision_style and padded_size is None:
                raise ValueError("the torchvision convention (MODEL.FCOS.CONVENTION) needs the padded image size")
            key = (h, w, self.fpn_strides[level], feature.device) + (tuple(padded_size) if torchvision_style else ())
            loc = self._locations_cache.get(key)
            if loc is None:
                if len(self._locations_cache) > 256:
                    self._locations_cache.clear()
                if torchvision_style:
                    loc = torchvision_locations_per_level(h, w, padded_size, feature.device, torch.float32)
                else:
                    loc = compute_locations_per_level(h, w, self.fpn_strides[level], feature.device, torch.float32)
                self._locations_cache[key] = loc
            locations.append(loc)
        return locations


def build_fcos(cfg, in_channels):
    """The FCOS module from the config (MODEL.FCOS.*): the one place that reads it."""
    fcos = cfg.MODEL.FCOS
    if fcos.NUM_CLASSES < 2:
        # 0 ("from the data") is resolved by the engine (fcos_core.engine.classes) before the model
        # is built; a tool that builds a model straight from the config has no data to take it from
        raise ValueError(
            "MODEL.FCOS.NUM_CLASSES is {}: a model needs the class count, background included (>= 2). "
            "0 means 'from the data' only where tools/train_net.py (DATASETS.TRAIN) or a checkpoint "
            "(test_net, demo, fcos, export) can supply it; set it explicitly here".format(fcos.NUM_CLASSES))
    head = FCOSHead(
        in_channels,
        num_classes=fcos.NUM_CLASSES - 1,
        fpn_strides=fcos.FPN_STRIDES,
        num_convs=fcos.NUM_CONVS,
        prior_prob=fcos.PRIOR_PROB,
        centerness_on_reg=fcos.CENTERNESS_ON_REG,
        norm_reg_targets=fcos.NORM_REG_TARGETS,
        use_dcn_in_tower=fcos.USE_DCN_IN_TOWER,
        recompute_tower_norm=fcos.RECOMPUTE_TOWER_NORM,
    )
    return FCOSModule(head, make_fcos_loss_evaluator(cfg), make_fcos_postprocessor(cfg), fcos.FPN_STRIDES,
                      convention=fcos.CONVENTION)
