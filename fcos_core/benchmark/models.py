"""The benchmarked models and their inputs: ours and torchvision's detectors (random weights, the
same backbone configuration), the benchmark image and boxes, and the classifier calibration that
makes post-processing do realistic work with random weights."""
import os

import torch

from fcos_core.utils.imagenet_weights import torchvision_fcos_to_detector

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OURS_CONFIG = "fcos_R_50_FPN_1x.yaml"
OURS = "ours fcos_R_50_FPN_1x"
TV_FCOS = "torchvision fcos_resnet50_fpn"
TV_RETINANET = "torchvision retinanet_resnet50_fpn"
TV_FASTERRCNN = "torchvision fasterrcnn_resnet50_fpn"
TV_TRANSFORM = "torchvision GeneralizedRCNNTransform alone"
INFERENCE_MODELS = (OURS, TV_FCOS, TV_RETINANET, TV_FASTERRCNN)
TRAIN_MODELS = (OURS, TV_FCOS, TV_RETINANET)
NUM_CLASSES = 80


def build_ours(device="cpu", *opts):
    """Our ``fcos_R_50_FPN_1x`` with no weight file (random init) on ``device``."""
    from fcos_core.config import cfg as default_cfg
    from fcos_core.modeling.detector import build_detection_model

    c = default_cfg.clone()
    c.merge_from_file(os.path.join(ROOT, "configs", "fcos", OURS_CONFIG))
    c.merge_from_list(["MODEL.WEIGHT", "", "MODEL.DEVICE", device, *opts])
    c.freeze()
    return build_detection_model(c).to(device), c


def freeze_like_imagenet_backbone(model):
    """BatchNorm -> FrozenBatchNorm2d in the ResNet body, stem and layer1 frozen: what torchvision's
    builders produce with ``weights_backbone`` set (``trainable_backbone_layers`` 3)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    def replace(module):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key).detach())
                setattr(module, name, frozen)
            else:
                replace(child)

    body = model.backbone.body
    replace(body)
    for name, p in body.named_parameters():
        p.requires_grad_(name.startswith(("layer2.", "layer3.", "layer4.")))
    return model


def build_torchvision(name, size, device="cpu"):
    """A torchvision detector, random weights, ImageNet-backbone configuration, transform not resizing."""
    from torchvision.models import detection

    builders = {
        TV_FCOS: (detection.fcos_resnet50_fpn, NUM_CLASSES),
        TV_RETINANET: (detection.retinanet_resnet50_fpn, NUM_CLASSES),
        TV_FASTERRCNN: (detection.fasterrcnn_resnet50_fpn, NUM_CLASSES + 1),
    }
    builder, num_classes = builders[name]
    short, long = min(size), max(size)  # the transform scales by min(min_size / short side, max_size / long side)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, min_size=short, max_size=long)
    model.transform.min_size = (short,)
    model.transform.max_size = long
    return freeze_like_imagenet_backbone(model).to(device)


def map_torchvision_fcos(tv_state):
    """torchvision ``fcos_resnet50_fpn`` state dict -> our key names (plus unit Scales)."""
    return torchvision_fcos_to_detector(tv_state)


# --------------------------------------------------------------------------------------------
# inputs


def make_image(size, seed):
    """A smooth random RGB image in [0, 1], [3, H, W] (structured, not white noise)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand(1, 3, max(h // 16, 2), max(w // 16, 2), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (img + 0.05 * torch.randn(3, h, w, generator=g)).clamp_(0, 1)


def to_ours(img, cfg):
    """The [0, 1] RGB image as our model takes it: BGR 0-255 (TO_BGR255) minus PIXEL_MEAN, / PIXEL_STD."""
    x = img[[2, 1, 0]] * 255 if cfg.INPUT.TO_BGR255 else img
    mean = torch.tensor(cfg.INPUT.PIXEL_MEAN, dtype=x.dtype)[:, None, None]
    std = torch.tensor(cfg.INPUT.PIXEL_STD, dtype=x.dtype)[:, None, None]
    return ((x - mean) / std).contiguous()


def make_boxes(size, batch, seed):
    """3-5 random boxes per image: list of (boxes [n, 4] xyxy, labels [n] in 1..80)."""
    g = torch.Generator().manual_seed(seed + 1)
    h, w = size
    out = []
    for _ in range(batch):
        n = int(torch.randint(3, 6, (1,), generator=g))
        bw = (torch.rand(n, generator=g) * 0.45 + 0.05) * w
        bh = (torch.rand(n, generator=g) * 0.45 + 0.05) * h
        x0 = torch.rand(n, generator=g) * (w - bw)
        y0 = torch.rand(n, generator=g) * (h - bh)
        boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], 1)
        labels = torch.randint(1, NUM_CLASSES + 1, (n,), generator=g)
        out.append((boxes, labels))
    return out


# --------------------------------------------------------------------------------------------
# calibration of the classifiers (inference)


def capture(module, run):
    """Outputs of ``module`` (every call) while ``run()`` runs."""
    outs = []
    handle = module.register_forward_hook(lambda m, i, o: outs.append(o.detach().float().cpu()))
    try:
        run()
    finally:
        handle.remove()
    return outs


def bisect(frac, target, lo, hi, iters=50):
    """x in [lo, hi] with frac(x) ~ target, for frac increasing in x."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if frac(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def calibrate(name, model, call, fraction):
    """Set ``model``'s classifier so that ``fraction`` of its class scores pass its threshold.

    Returns (number of scores above threshold after calibration, total number of class scores).
    """
    with torch.inference_mode():
        if name == OURS:
            th = 0.05  # MODEL.FCOS.INFERENCE_TH on sigmoid(cls)
            conv = model.rpn.head.cls_logits
            logits = torch.cat([o.flatten() for o in capture(conv, call)])
            count = lambda d: int((torch.sigmoid(logits + d) > th).sum())  # noqa: E731
        elif name == TV_RETINANET:
            th = model.score_thresh
            conv = model.head.classification_head.cls_logits
            logits = torch.cat([o.flatten() for o in capture(conv, call)])
            count = lambda d: int((torch.sigmoid(logits + d) > th).sum())  # noqa: E731
        elif name == TV_FCOS:
            th = model.score_thresh  # on sqrt(sigmoid(cls) * sigmoid(ctr))
            conv = model.head.classification_head.cls_logits
            ctr_conv = model.head.regression_head.bbox_ctrness
            ctrs = []
            handle = ctr_conv.register_forward_hook(lambda m, i, o: ctrs.append(o.detach().float().cpu()))
            try:
                cls = capture(conv, call)
            finally:
                handle.remove()
            pairs = [(c[0], torch.sigmoid(t[0])) for c, t in zip(cls, ctrs)]  # [K, H, W], [1, H, W]
            logits = torch.cat([c.flatten() for c, _ in pairs])
            count = lambda d: sum(int((torch.sigmoid(c + d) * t > th * th).sum()) for c, t in pairs)  # noqa: E731
        elif name == TV_FASTERRCNN:
            th = model.roi_heads.score_thresh
            lin = model.roi_heads.box_predictor.cls_score
            logits = torch.cat(capture(lin, call))  # [proposals, 81]
            count = lambda s: int((torch.softmax(logits * s, 1)[:, 1:] > th).sum())  # noqa: E731
            total = logits[:, 1:].numel()
            # not monotone at large scales (softmax becomes one-hot): scan a log grid
            grid = [10 ** (k / 20) for k in range(-40, 81)]
            scale = min(grid, key=lambda s: abs(count(s) / max(total, 1) - fraction))
            lin.weight.mul_(scale)
            lin.bias.mul_(scale)
            return count(scale), total
        else:
            raise ValueError(name)
        total = logits.numel()
        delta = bisect(lambda d: count(d) / max(total, 1), fraction, -40.0, 40.0)
        conv.bias.add_(delta)
        return count(delta), total

