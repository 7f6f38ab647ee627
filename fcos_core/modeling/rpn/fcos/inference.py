"""FCOS post-processing: head outputs to detections (Sec. 3.1 "Inference", Sec. 3.3 for centerness, and the original test settings).

Per level and image: keep the (location, class) pairs whose classification probability is
above ``pre_nms_thresh`` (MODEL.FCOS.INFERENCE_TH), at most ``pre_nms_top_n``
(MODEL.FCOS.PRE_NMS_TOP_N) of them by probability x centerness, decode their boxes and clip them
to the image; the detection score is ``sqrt(sigmoid(cls) * sigmoid(centerness))``. Then, over all
levels of an image, class-aware NMS (MODEL.FCOS.NMS_TH, legacy +1 IoU) and the
``fpn_post_nms_top_n`` (TEST.DETECTIONS_PER_IMG) best detections, ties at the threshold kept.
With MODEL.FCOS.CONVENTION "torchvision" the rules are those of torchvision's FCOS instead: the
candidates are the pairs whose detection score ``sqrt(cls * centerness)`` is above the threshold,
ranked by it; boxes are clipped to ``[0, W] x [0, H]``; NMS uses the continuous IoU; and exactly
``fpn_post_nms_top_n`` detections are kept (see :class:`FCOSPostProcessor`'s flags).

The whole batch is processed at once: the candidates of every image and level are one flat list
tagged with their image, the per-(image, level) and per-image top-k are ranks within groups, and
one class-aware NMS call treats (image, class) as the class. The host waits for the device only
where a size must be known: the candidates (``nonzero``), their one filter, the NMS, the post-NMS
filter and the final split into one BoxList per image; none of these is per image or per level.
Everything runs in float32, also under autocast (reduced-precision head outputs are cast up first).
"""
import torch

from fcos_core.layers.nms import ml_nms
from fcos_core.structures.bounding_box import BoxList

from .conventions import check_convention
from .target_assignment import flatten_level_outputs


def decode_boxes(locations, distances):
    """Boxes ``xyxy`` [P, 4] from locations [P, 2] ``(x, y)`` and distances [P, 4] ``(l, t, r, b)``."""
    return torch.cat((locations - distances[:, :2], locations + distances[:, 2:]), dim=1)


def clip_boxes(boxes, max_xy):
    """``xyxy`` boxes [P, 4] clamped to ``[0, max_x] x [0, max_y]``, ``max_xy`` [P, 2] per box.

    ``max_xy`` is ``(W - 1, H - 1)`` for pixel-inclusive boxes, as ``BoxList.clip_to_image``.
    """
    max_x, max_y = max_xy[:, 0], max_xy[:, 1]
    x1, y1, x2, y2 = boxes.clamp(min=0).unbind(dim=1)
    return torch.stack((torch.minimum(x1, max_x), torch.minimum(y1, max_y),
                        torch.minimum(x2, max_x), torch.minimum(y2, max_y)), dim=1)


def group_sizes(group, num_groups):
    """Number of elements of each group: int64 [num_groups] for ``group`` [K] in ``0 .. num_groups - 1``.

    A scatter-add rather than ``torch.bincount``, which reads the maximum back to the host on CUDA.
    """
    return torch.zeros(num_groups, dtype=torch.int64, device=group.device).scatter_add_(
        0, group, torch.ones_like(group))


def rank_within_groups(group, score, num_groups):
    """Rank of each element among those of its group by decreasing score: int64 [K], 0 = best.

    Args:
        group: [K] int64 in ``0 .. num_groups - 1``; score: [K] float.

    Equal scores are ranked by increasing index (a stable sort), as ``nms`` visits them.
    """
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    counts = group_sizes(group, num_groups)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - starts[group[order]]
    return rank


def top_n_with_ties(group, score, num_groups, n):
    """BoolTensor [K]: the elements whose score is at least the n-th best of their group.

    Equal to keeping ``score >= kthvalue(score_g, len_g - n + 1)`` in every group ``g`` with more
    than ``n`` elements and everything in the others (the original's FPN_POST_NMS_TOP_N cut).
    """
    rank = rank_within_groups(group, score, num_groups)
    counts = group_sizes(group, num_groups)
    # the n-th best score of each group, by a scatter (a boolean index would wait for the device)
    at_n = torch.where(rank == n - 1, score, score.new_full((), float("-inf")))
    nth = score.new_full((num_groups,), float("-inf")).scatter_reduce_(0, group, at_n, reduce="amax")
    return (counts[group] <= n) | (score >= nth[group])


def flatten_level_sigmoid(outputs, channels):
    """float32 sigmoid of per-level logits [N, C, H_l, W_l], flattened to [N, sum_l H_l W_l, C].

    The sigmoid runs level by level, before concatenating: vectorised and scalar sigmoid kernels
    may differ in the last bit, so this keeps every value what a per-level pass computes.
    """
    n = outputs[0].shape[0]
    return torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1, channels).float().sigmoid() for o in outputs], dim=1)


class FCOSPostProcessor(torch.nn.Module):
    """Callable ``(locations, box_cls, box_regression, centerness, image_sizes) -> list[BoxList]``.

    ``locations``: list over levels of [L_l, 2]; ``box_cls``: list of [N, C, H_l, W_l] logits;
    ``box_regression``: list of [N, 4, H_l, W_l] distances in pixels; ``centerness``: list of
    [N, 1, H_l, W_l] logits; ``image_sizes``: list of (h, w). Each returned BoxList is ``xyxy``
    float32 in the coordinates of the (resized, unpadded) input image, with fields "labels"
    (int64, 1..C) and "scores" (float32), in decreasing score order.

    Args:
        pre_nms_thresh: candidate threshold (MODEL.FCOS.INFERENCE_TH), on the classification
            probability, or on the detection score with ``threshold_on_score``.
        pre_nms_top_n: candidates kept per image and level (MODEL.FCOS.PRE_NMS_TOP_N).
        nms_thresh: IoU threshold of the class-aware NMS (MODEL.FCOS.NMS_TH; <= 0: no NMS).
        fpn_post_nms_top_n: detections kept per image (TEST.DETECTIONS_PER_IMG; <= 0: all).
        min_size: boxes narrower or lower than this (pixels) are dropped (0: none).
        num_classes: MODEL.FCOS.NUM_CLASSES (background included).
        threshold_on_score: threshold and rank the candidates by the detection score
            ``sqrt(cls_prob * ctr_prob)`` (torchvision) instead of thresholding ``cls_prob`` and
            ranking by ``cls_prob * ctr_prob`` (original).
        legacy_boxes: pixel-inclusive boxes (original): clipped to ``[0, W - 1] x [0, H - 1]``,
            widths ``x2 - x1 + 1`` in ``min_size`` and in the NMS IoU. False: continuous boxes
            (torchvision): clipped to ``[0, W] x [0, H]``, widths ``x2 - x1``.
        keep_ties: keep every detection tied with the ``fpn_post_nms_top_n``-th (original) instead
            of exactly the first ``fpn_post_nms_top_n`` (torchvision).
    """

    def __init__(self, pre_nms_thresh, pre_nms_top_n, nms_thresh, fpn_post_nms_top_n, min_size, num_classes,
                 threshold_on_score=False, legacy_boxes=True, keep_ties=True):
        super().__init__()
        self.pre_nms_thresh = pre_nms_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.fpn_post_nms_top_n = fpn_post_nms_top_n
        self.min_size = min_size
        self.num_classes = num_classes
        self.threshold_on_score = threshold_on_score
        self.legacy_boxes = legacy_boxes
        self.keep_ties = keep_ties

    def forward(self, locations, box_cls, box_regression, centerness, image_sizes):
        with torch.autocast(device_type=box_cls[0].device.type, enabled=False):
            image_idx, boxes, scores, labels = self.select_candidates(
                locations, box_cls, box_regression, centerness, image_sizes
            )
            keep = self.nms_and_top_n(image_idx, boxes, scores, labels, len(image_sizes))
            return split_by_image(image_idx[keep], boxes[keep], scores[keep], labels[keep], image_sizes)

    def select_candidates(self, locations, box_cls, box_regression, centerness, image_sizes):
        """Candidates of every image and level, before NMS (flat, image by image, level by level).

        Returns:
            image_idx [K] int64, boxes [K, 4] ``xyxy`` clipped to their image, scores [K]
            (``sqrt(cls_prob * ctr_prob)``) and labels [K] int64 (1..C), all float32 / on the
            inputs' device; at most ``pre_nms_top_n`` per image and level.
        """
        n, c = box_cls[0].shape[:2]
        cls_prob = flatten_level_sigmoid(box_cls, c)  # [N, L, C]
        ctr_prob = flatten_level_sigmoid(centerness, 1)[..., 0]  # [N, L]
        distances = flatten_level_outputs(box_regression, 4).float()  # [N, L, 4]
        # tensors of per-level / per-image constants by fills on the device: a host-to-device copy
        # of a Python list would wait for the device
        level = torch.cat([torch.full((len(loc),), i, device=cls_prob.device) for i, loc in enumerate(locations)])
        inclusive = 1 if self.legacy_boxes else 0
        max_xy = torch.stack([cls_prob.new_full((), v) for h, w in image_sizes
                              for v in (int(w) - inclusive, int(h) - inclusive)])
        max_xy = max_xy.reshape(-1, 2)  # [N, 2]: (W - 1, H - 1) as BoxList.clip_to_image, or (W, H)
        if self.threshold_on_score:  # torchvision: sqrt(cls * ctr) > threshold, ranked by it
            all_scores = torch.sqrt(cls_prob * ctr_prob[..., None])
            image_idx, loc_idx, class_idx = (all_scores > self.pre_nms_thresh).nonzero(as_tuple=True)
            score = all_scores[image_idx, loc_idx, class_idx]
        else:
            image_idx, loc_idx, class_idx = (cls_prob > self.pre_nms_thresh).nonzero(as_tuple=True)
            score = cls_prob[image_idx, loc_idx, class_idx] * ctr_prob[image_idx, loc_idx]
        rank = rank_within_groups(image_idx * len(locations) + level[loc_idx], score, n * len(locations))
        boxes = decode_boxes(torch.cat(locations)[loc_idx], distances[image_idx, loc_idx])
        boxes = clip_boxes(boxes, max_xy[image_idx])
        keep = rank < self.pre_nms_top_n
        if self.legacy_boxes or self.min_size > 0:
            # remove_small_boxes: widths and heights x2 - x1 (+ 1 legacy), both >= min_size
            keep &= ((boxes[:, 2] - boxes[:, 0] + inclusive >= self.min_size)
                     & (boxes[:, 3] - boxes[:, 1] + inclusive >= self.min_size))
        score = score[keep] if self.threshold_on_score else torch.sqrt(score[keep])
        return image_idx[keep], boxes[keep], score, class_idx[keep] + 1

    def nms_and_top_n(self, image_idx, boxes, scores, labels, num_images):
        """Indices [K'] kept by class-aware NMS within each image and the per-image top-n.

        One NMS call for the batch: (image, label) pairs act as the classes. The kept indices are
        in decreasing score order (ties: lower index first), so each image's detections are in the
        order per-image NMS gives.
        """
        if self.nms_thresh > 0:
            keep = ml_nms(boxes, scores, image_idx * (self.num_classes + 1) + labels, self.nms_thresh,
                          legacy=self.legacy_boxes)
        else:
            keep = torch.arange(scores.numel(), device=scores.device)
        if self.fpn_post_nms_top_n > 0:
            n = self.fpn_post_nms_top_n
            if self.keep_ties:
                keep = keep[top_n_with_ties(image_idx[keep], scores[keep], num_images, n)]
            else:
                keep = keep[rank_within_groups(image_idx[keep], scores[keep], num_images) < n]
        return keep

    def select_over_all_levels(self, boxlists):
        """Class-aware NMS, then the ``fpn_post_nms_top_n`` best of each image.

        ``boxlists``: one BoxList per image with fields "scores" and "labels" (e.g. the merged
        passes of test-time augmentation); returns new BoxLists, ``xyxy``.
        """
        if not boxlists:
            return []
        boxlists = [b.convert("xyxy") for b in boxlists]
        device = boxlists[0].bbox.device
        image_idx = torch.cat([torch.full((len(b),), i, device=device) for i, b in enumerate(boxlists)])
        boxes = torch.cat([b.bbox for b in boxlists])
        scores = torch.cat([b.get_field("scores") for b in boxlists])
        labels = torch.cat([b.get_field("labels") for b in boxlists])
        keep = self.nms_and_top_n(image_idx, boxes, scores, labels, len(boxlists))
        sizes = [(b.size[1], b.size[0]) for b in boxlists]
        return split_by_image(image_idx[keep], boxes[keep], scores[keep], labels[keep], sizes)


def split_by_image(image_idx, boxes, scores, labels, image_sizes):
    """One BoxList per image (size ``(w, h)`` from ``image_sizes`` (h, w)), keeping each image's order.

    Args:
        image_idx [K] int64; boxes [K, 4] ``xyxy``; scores [K]; labels [K].
    """
    order = torch.argsort(image_idx, stable=True)
    counts = group_sizes(image_idx, len(image_sizes)).tolist()
    results = []
    for idx, (h, w) in zip(order.split(counts), image_sizes):
        boxlist = BoxList(boxes[idx], (int(w), int(h)), mode="xyxy")
        boxlist.add_field("labels", labels[idx])
        boxlist.add_field("scores", scores[idx])
        results.append(boxlist)
    return results


def make_fcos_postprocessor(cfg):
    """Build :class:`FCOSPostProcessor` from MODEL.FCOS.* (CONVENTION chooses the rules) and
    TEST.DETECTIONS_PER_IMG."""
    convention = check_convention(cfg.MODEL.FCOS.CONVENTION)
    torchvision = convention == "torchvision"
    return FCOSPostProcessor(
        pre_nms_thresh=cfg.MODEL.FCOS.INFERENCE_TH,
        pre_nms_top_n=cfg.MODEL.FCOS.PRE_NMS_TOP_N,
        nms_thresh=cfg.MODEL.FCOS.NMS_TH,
        fpn_post_nms_top_n=cfg.TEST.DETECTIONS_PER_IMG,
        min_size=0,
        num_classes=cfg.MODEL.FCOS.NUM_CLASSES,
        threshold_on_score=torchvision,
        legacy_boxes=not torchvision,
        keep_ties=not torchvision,
    )
