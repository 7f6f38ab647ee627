"""FCOS post-processing: head outputs to detections (Sec. 2.3 and the original test settings).

Per level and image: keep the (location, class) pairs whose classification probability is
above ``pre_nms_thresh``, at most ``pre_nms_top_n`` of them by probability x centerness, decode
their boxes and clip them to the image; the detection score is
``sqrt(sigmoid(cls) * sigmoid(centerness))``. Then, over all levels of an image, class-aware
NMS (legacy +1 IoU) and the ``fpn_post_nms_top_n`` best detections (ties at the threshold kept).
"""
import torch

from fcos_core.structures.bounding_box import BoxList
from fcos_core.structures.boxlist_ops import boxlist_ml_nms, cat_boxlist, remove_small_boxes


def decode_boxes(locations, distances):
    """Boxes ``xyxy`` [P, 4] from locations [P, 2] ``(x, y)`` and distances [P, 4] ``(l, t, r, b)``."""
    return torch.cat((locations - distances[:, :2], locations + distances[:, 2:]), dim=1)


def select_candidates(cls_prob, centerness_prob, pre_nms_thresh, pre_nms_top_n):
    """Candidate (location, class) pairs of one image and one level.

    Args:
        cls_prob: [L, C] classification probabilities.
        centerness_prob: [L] centerness probabilities.

    Returns:
        loc_idx [K], class_idx [K] (0-based column), and the ranking score
        ``cls_prob * centerness_prob`` [K], with K <= pre_nms_top_n.
    """
    candidates = cls_prob > pre_nms_thresh
    score = cls_prob * centerness_prob[:, None]
    loc_idx, class_idx = candidates.nonzero(as_tuple=True)
    score = score[loc_idx, class_idx]
    if score.numel() > pre_nms_top_n:
        score, top = score.topk(pre_nms_top_n, sorted=False)
        loc_idx = loc_idx[top]
        class_idx = class_idx[top]
    return loc_idx, class_idx, score


class FCOSPostProcessor(torch.nn.Module):
    """Callable ``(locations, box_cls, box_regression, centerness, image_sizes) -> list[BoxList]``.

    ``locations``: list over levels of [L_l, 2]; ``box_cls``: list of [N, C, H_l, W_l] logits;
    ``box_regression``: list of [N, 4, H_l, W_l] distances in pixels; ``centerness``: list of
    [N, 1, H_l, W_l] logits; ``image_sizes``: list of (h, w). Each returned BoxList is ``xyxy``
    in the coordinates of the (resized, unpadded) input image, with fields "scores" and
    "labels" (1..C).
    """

    def __init__(self, pre_nms_thresh, pre_nms_top_n, nms_thresh, fpn_post_nms_top_n, min_size, num_classes):
        super().__init__()
        self.pre_nms_thresh = pre_nms_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.fpn_post_nms_top_n = fpn_post_nms_top_n
        self.min_size = min_size
        self.num_classes = num_classes

    def forward_for_single_feature_map(self, locations, box_cls, box_regression, centerness, image_sizes):
        """Detections of one level for every image: a list of BoxList."""
        n, c, _, _ = box_cls.shape
        cls_prob = box_cls.permute(0, 2, 3, 1).reshape(n, -1, c).sigmoid()
        distances = box_regression.permute(0, 2, 3, 1).reshape(n, -1, 4)
        ctr_prob = centerness.permute(0, 2, 3, 1).reshape(n, -1).sigmoid()
        results = []
        for i in range(n):
            loc_idx, class_idx, score = select_candidates(
                cls_prob[i], ctr_prob[i], self.pre_nms_thresh, self.pre_nms_top_n
            )
            boxes = decode_boxes(locations[loc_idx], distances[i, loc_idx])
            h, w = image_sizes[i]
            boxlist = BoxList(boxes, (int(w), int(h)), mode="xyxy")
            boxlist.add_field("labels", class_idx + 1)
            boxlist.add_field("scores", torch.sqrt(score))
            boxlist = boxlist.clip_to_image(remove_empty=False)
            results.append(remove_small_boxes(boxlist, self.min_size))
        return results

    def forward(self, locations, box_cls, box_regression, centerness, image_sizes):
        per_level = [
            self.forward_for_single_feature_map(loc, cls, reg, ctr, image_sizes)
            for loc, cls, reg, ctr in zip(locations, box_cls, box_regression, centerness)
        ]
        per_image = [cat_boxlist(list(boxlists)) for boxlists in zip(*per_level)]
        return self.select_over_all_levels(per_image)

    def select_over_all_levels(self, boxlists):
        """Class-aware NMS, then the ``fpn_post_nms_top_n`` best of each image."""
        results = []
        for boxlist in boxlists:
            result = boxlist_ml_nms(boxlist, self.nms_thresh)
            num = len(result)
            if num > self.fpn_post_nms_top_n > 0:
                scores = result.get_field("scores")
                thresh, _ = torch.kthvalue(scores.cpu(), num - self.fpn_post_nms_top_n + 1)
                keep = torch.nonzero(scores >= thresh.item()).squeeze(1)
                result = result[keep]
            results.append(result)
        return results


def make_fcos_postprocessor(cfg):
    """Build :class:`FCOSPostProcessor` from MODEL.FCOS.* and TEST.DETECTIONS_PER_IMG."""
    return FCOSPostProcessor(
        pre_nms_thresh=cfg.MODEL.FCOS.INFERENCE_TH,
        pre_nms_top_n=cfg.MODEL.FCOS.PRE_NMS_TOP_N,
        nms_thresh=cfg.MODEL.FCOS.NMS_TH,
        fpn_post_nms_top_n=cfg.TEST.DETECTIONS_PER_IMG,
        min_size=0,
        num_classes=cfg.MODEL.FCOS.NUM_CLASSES,
    )
