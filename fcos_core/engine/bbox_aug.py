"""Test-time augmentation (TEST.BBOX_AUG): detect at several scales and flipped, merge with NMS.

As the original: detections at the test scale, optionally on the horizontally flipped image, and
at each extra scale in TEST.BBOX_AUG.SCALES (long side capped at TEST.BBOX_AUG.MAX_SIZE), each
optionally flipped, are mapped back to the test-scale image, pooled, and reduced by the
post-processor's class-aware NMS and top-k (``select_over_all_levels``).

The resizing works on the already normalised tensor. Per-channel normalisation is affine and
bilinear interpolation is a convex combination, so the two commute: resizing the normalised image
equals normalising the resized one, up to the 8-bit rounding of a resized image file.
"""
import torch
import torch.nn.functional as F

from fcos_core.data.transforms.transforms import Resize
from fcos_core.structures.bounding_box import FLIP_LEFT_RIGHT, BoxList
from fcos_core.structures.image_list import to_image_list


def _unpadded(images):
    """The images of an ImageList without their padding: a list of [3, h, w]."""
    return [t[:, :h, :w] for t, (h, w) in zip(images.tensors, images.image_sizes)]


def _detect(model, tensors, size_divisible, device, hflip=False):
    if hflip:
        tensors = [t.flip(-1) for t in tensors]
    batch = to_image_list(tensors, size_divisible).to(device)
    results = model(batch)
    if hflip:
        results = [r.transpose(FLIP_LEFT_RIGHT) for r in results]
    return results


def _rescale(tensors, min_size, max_size):
    out = []
    for t in tensors:
        h, w = Resize(min_size, max_size).get_size((t.shape[-1], t.shape[-2]))
        out.append(F.interpolate(t[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0].to(t.dtype))
    return out


def im_detect_bbox_aug(model, images, device, scales=(), max_size=4000, hflip=False, scale_hflip=False):
    """Merged detections of every augmented pass: a list of BoxList in the input images' coordinates.

    Args:
        model: a detector in eval mode whose ``rpn.box_selector_test`` is the FCOS post-processor.
        images: ImageList at the test scale (normalised, padded).
    """
    base = _unpadded(images)
    size_div = getattr(model, "size_divisibility", 0)
    passes = [_detect(model, base, size_div, device)]
    if hflip:
        passes.append(_detect(model, base, size_div, device, hflip=True))
    for scale in scales:
        scaled = _rescale(base, scale, max_size)
        passes.append(_detect(model, scaled, size_div, device))
        if scale_hflip:
            passes.append(_detect(model, scaled, size_div, device, hflip=True))
    merged = []
    for i, (h, w) in enumerate(images.image_sizes):
        parts = [p[i].resize((w, h)) for p in passes]
        boxlist = BoxList(torch.cat([p.bbox for p in parts]), (w, h), mode="xyxy")
        for field in ("scores", "labels"):
            boxlist.add_field(field, torch.cat([p.get_field(field) for p in parts]))
        merged.append(boxlist)
    return model.rpn.box_selector_test.select_over_all_levels(merged)


def make_bbox_aug_fn(cfg):
    """``fn(model, images, device)`` for TEST.BBOX_AUG, or None when it is disabled."""
    aug = cfg.TEST.BBOX_AUG
    if not aug.ENABLED:
        return None

    def fn(model, images, device):
        return im_detect_bbox_aug(model, images, device, tuple(aug.SCALES), aug.MAX_SIZE, aug.H_FLIP, aug.SCALE_H_FLIP)

    return fn
