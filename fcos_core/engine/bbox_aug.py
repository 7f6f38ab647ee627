"""Test-time augmentation (TEST.BBOX_AUG): detect at several scales and flipped, merge with NMS.

As the original (FCOS's ``engine/bbox_aug.py``), per image:

1. passes: the test scale (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST); the same, horizontally flipped
   (H_FLIP); each of SCALES with the long side capped at MAX_SIZE; each of those flipped too
   (SCALE_H_FLIP). Every pass resizes the image it is given, never the output of another pass, by
   the data pipeline's resize of INPUT.RESIZE_STYLE (``make_resize``: the original's ``Resize``
   rule, or torchvision's ``TensorResize``), and flips after resizing;
2. the boxes of a flipped pass are flipped back with ``BoxList.transpose(FLIP_LEFT_RIGHT)``
   (pixel-inclusive: ``x -> W - 1 - x`` in the flipped image's width ``W``); in the torchvision
   box convention (MODEL.FCOS.CONVENTION "torchvision": continuous boxes, clipped to [0, W])
   ``x -> W - x`` instead, so that a box touching the right border comes back at 0, not at -1;
3. every pass's boxes are mapped to the first (test-scale) pass's image size with ``BoxList.resize``
   (x by the width ratio, y by the height ratio);
4. the pooled boxes go through the post-processor's ``select_over_all_levels``: class-aware NMS
   (MODEL.FCOS.NMS_TH) and the TEST.DETECTIONS_PER_IMG best per image.

The original's test loader hands TTA the original images; images already at the test scale work
too (the test-scale pass then keeps them as they are, unless the long side was capped, where the
``Resize`` rule can move a side by a pixel or two), but the extra scales are then resampled from
the test-scale image rather than from the original.

The resizing works on the already normalised tensor. INPUT.RESIZE_STYLE "original": to the sizes
of the ``Resize`` rule, bilinear and antialiased, as PIL resizes the image file in the data
pipeline; per-channel normalisation is affine and resampling is a convex combination, so the two
commute: resizing the normalised image equals normalising the resized one, up to the 8-bit rounding
of a resized image file. "torchvision": ``TensorResize`` itself, which resizes the normalised
tensor in the data pipeline too (sides ``floor(side * scale)``, bilinear, not antialiased).
"""
import torch
from torchvision.transforms import functional as TF

from fcos_core.data.transforms import TensorResize, make_resize
from fcos_core.modeling.rpn.fcos.conventions import check_convention
from fcos_core.structures.bounding_box import FLIP_LEFT_RIGHT, BoxList
from fcos_core.structures.image_list import to_image_list


def tta_passes(test_size, scales=(), max_size=4000, hflip=False, scale_hflip=False):
    """The passes of TTA in the original's order: a list of ``(min_size, max_size, hflip)``.

    Args:
        test_size: ``(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)`` in pixels; the first pass, whose
            image size the merged boxes are given in.
        scales: extra short sides in pixels, each with long side at most ``max_size``.
        hflip: also the flipped image at the test size; scale_hflip: also flipped at each scale.
    """
    passes = [(test_size[0], test_size[1], False)]
    if hflip:
        passes.append((test_size[0], test_size[1], True))
    for scale in scales:
        passes.append((scale, max_size, False))
        if scale_hflip:
            passes.append((scale, max_size, True))
    return passes


def _unpadded(images):
    """The images of an ImageList without their padding: a list of [3, h, w] (views)."""
    return [t[:, :h, :w] for t, (h, w) in zip(images.tensors, images.image_sizes)]


def _resized(image, min_size, max_size, resize_style="original"):
    """``image`` [3, h, w] (normalised) resized as the data pipeline's resize of ``resize_style``
    (INPUT.RESIZE_STYLE) does; for "original" itself when the size is kept."""
    resize = make_resize(resize_style, min_size, max_size)
    if isinstance(resize, TensorResize):
        return resize(image)
    h, w = image.shape[-2:]
    size = resize.get_size((w, h))
    if tuple(size) == (h, w):
        return image
    return TF.resize(image, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def _unflip(boxlist, continuous):
    """``boxlist`` flipped back left-right: ``x -> W - 1 - x`` (pixel-inclusive boxes), or
    ``x -> W - x`` when ``continuous`` (the torchvision convention)."""
    flipped = boxlist.transpose(FLIP_LEFT_RIGHT)
    if continuous:
        flipped.bbox = flipped.bbox + flipped.bbox.new_tensor([1.0, 0.0, 1.0, 0.0])
    return flipped


def _detect_pass(model, images, min_size, max_size, hflip, size_divisible, resize_style="original",
                 continuous=False):
    """Detections of one pass, in the coordinates of that pass's (resized, unflipped) images.

    Args:
        images: list of [3, h, w] normalised tensors on the model's device.
        resize_style: INPUT.RESIZE_STYLE, the resize of :func:`_resized`.
        continuous: the model's boxes are continuous (flipped back as ``W - x``, :func:`_unflip`).
    Returns:
        list of BoxList, ``size`` = (width, height) of the resized image.
    """
    images = [_resized(t, min_size, max_size, resize_style) for t in images]
    if hflip:
        images = [t.flip(-1) for t in images]
    results = model(to_image_list(images, size_divisible))
    if hflip:
        results = [_unflip(r, continuous) for r in results]
    return results


def _pooled(boxlists):
    """One BoxList (fields "scores", "labels") of all ``boxlists`` mapped to the first one's size."""
    size = boxlists[0].size
    parts = [b.convert("xyxy").resize(size) for b in boxlists]
    pooled = BoxList(torch.cat([p.bbox for p in parts]), size, mode="xyxy")
    for field in ("scores", "labels"):
        pooled.add_field(field, torch.cat([p.get_field(field) for p in parts]))
    return pooled


def im_detect_bbox_aug(model, images, device, test_size, scales=(), max_size=4000, hflip=False,
                       scale_hflip=False, size_divisible=0, resize_style="original", convention="original"):
    """Merged detections of every pass of :func:`tta_passes`, one BoxList per image.

    Args:
        model: a detector in eval mode, ``model(ImageList) -> list[BoxList]`` (fields "scores",
            "labels"), whose ``rpn.box_selector_test`` is the FCOS post-processor.
        images: ImageList of normalised images (the original images; see the module docstring).
        test_size, scales, max_size, hflip, scale_hflip: see :func:`tta_passes`.
        size_divisible: padding of each pass's batch (DATALOADER.SIZE_DIVISIBILITY).
        resize_style: how every pass resizes (INPUT.RESIZE_STYLE: "original" or "torchvision").
        convention: the model's box convention (MODEL.FCOS.CONVENTION): how flipped boxes come back.
    Returns:
        list of BoxList ``xyxy`` in pixels of the test-scale image (its ``size``), fields "scores"
        and "labels", after class-aware NMS and the post-processor's top-k.
    """
    originals = _unpadded(images.to(device))
    continuous = check_convention(convention) == "torchvision"
    passes = [_detect_pass(model, originals, *p, size_divisible, resize_style, continuous)
              for p in tta_passes(test_size, scales, max_size, hflip, scale_hflip)]
    merged = [_pooled([p[i] for p in passes]) for i in range(len(originals))]
    return model.rpn.box_selector_test.select_over_all_levels(merged)


def _check_sizes(aug):
    """ValueError naming the key when TEST.BBOX_AUG.SCALES or MAX_SIZE is not a positive size."""
    if any(not isinstance(s, int) or s <= 0 for s in aug.SCALES):
        raise ValueError("TEST.BBOX_AUG.SCALES must be positive integers (short sides in pixels), got {}".format(
            tuple(aug.SCALES)))
    if aug.MAX_SIZE <= 0:
        raise ValueError("TEST.BBOX_AUG.MAX_SIZE must be positive (pixels), got {}".format(aug.MAX_SIZE))


def make_bbox_aug_fn(cfg):
    """``fn(model, images, device) -> list[BoxList]`` for TEST.BBOX_AUG, or None when it is disabled.

    Reads TEST.BBOX_AUG.*, INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST (the first pass),
    DATALOADER.SIZE_DIVISIBILITY (the padding of every pass, as the plain path's batches) and
    INPUT.RESIZE_STYLE (how every pass resizes, as the data pipeline would) and MODEL.FCOS.CONVENTION
    (how flipped boxes come back).
    """
    aug = cfg.TEST.BBOX_AUG
    if not aug.ENABLED:
        return None
    _check_sizes(aug)
    test_size = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    options = dict(scales=tuple(aug.SCALES), max_size=aug.MAX_SIZE, hflip=aug.H_FLIP,
                   scale_hflip=aug.SCALE_H_FLIP, size_divisible=cfg.DATALOADER.SIZE_DIVISIBILITY,
                   resize_style=cfg.INPUT.RESIZE_STYLE, convention=check_convention(cfg.MODEL.FCOS.CONVENTION))
    make_resize(options["resize_style"], *test_size)  # an unknown style: ValueError naming the key, now

    def fn(model, images, device):
        return im_detect_bbox_aug(model, images, device, test_size, **options)

    return fn
