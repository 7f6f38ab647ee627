"""Drawing detections: boxes in one colour per class, and "name score" labels on a filled
background, placed so that no label covers another. Used by :class:`COCODemo` (so by the demo
scripts, the ``fcos`` command and the quickstart's pictures).

Images are BGR uint8 arrays [H, W, 3] as OpenCV reads them; boxes are ``xyxy`` in pixels. Sizes
(line width, font) follow the image's short side, so that labels read the same at 300 px and at
1333 px.
"""
import colorsys

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
GOLDEN_RATIO = 0.618033988749895


def class_color(label):
    """A fixed BGR colour (tuple of 3 ints) for class ``label``: hues spaced by the golden ratio, so
    that neighbouring labels get far-apart colours, at a saturation and value readable on photos."""
    hue = (int(label) * GOLDEN_RATIO) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def text_color(background):
    """Black or white, whichever reads better on the BGR ``background`` (by its luma)."""
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def drawing_sizes(height, width):
    """(box line width, font scale, text thickness) for an image of ``height`` x ``width`` pixels."""
    short = min(height, width)
    return max(1, int(round(short / 300))), max(0.4, short / 1000.0), max(1, int(round(short / 600)))


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(box, size, taken, height, width):
    """Where a label of ``size`` = (w, h) goes for ``box`` (x1, y1, x2, y2): the first of above the
    box, inside its top, below it and inside its bottom (each at the box's left edge, moved into the
    image) that covers no rectangle of ``taken``; else the first free spot stepping down from above
    the box; else above the box. Returns the rectangle (x1, y1, x2, y2)."""
    w, h = size
    x1, y1, x2, y2 = box
    left = int(min(max(x1, 0), max(width - w, 0)))

    def rect(top):
        top = int(min(max(top, 0), max(height - h, 0)))
        return left, top, left + w, top + h

    candidates = [rect(y1 - h), rect(y1), rect(y2), rect(y2 - h)]
    candidates += [rect(y1 - h + k * h) for k in range(1, max(2, (height // max(h, 1)) + 1))]
    for candidate in candidates:
        if not any(_overlaps(candidate, other) for other in taken):
            return candidate
    return candidates[0]


def draw_boxes(image, boxes, labels):
    """Draw ``boxes`` (N x 4 ``xyxy``) in their class colours on ``image`` in place; returns it."""
    line, _, _ = drawing_sizes(*image.shape[:2])
    for (x1, y1, x2, y2), label in zip(np.asarray(boxes).round().astype(int).tolist(), list(labels)):
        cv2.rectangle(image, (x1, y1), (x2, y2), class_color(label), line)
    return image


def draw_labels(image, boxes, labels, texts):
    """Write ``texts`` (one per box) on filled rectangles of the class colour, in the order given
    (highest score first, so the best detections get the best spots), without covering an earlier
    label. Returns the label rectangles (x1, y1, x2, y2) drawn, in that order."""
    height, width = image.shape[:2]
    _, scale, thickness = drawing_sizes(height, width)
    taken = []
    for box, label, text in zip(np.asarray(boxes).tolist(), list(labels), texts):
        (tw, th), baseline = cv2.getTextSize(text, FONT, scale, thickness)
        pad = max(1, th // 4)
        x1, y1, x2, y2 = place_label(box, (tw + 2 * pad, th + baseline + 2 * pad), taken, height, width)
        color = class_color(label)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), color, -1)
        cv2.putText(image, text, (x1 + pad, y2 - pad - baseline), FONT, scale, text_color(color), thickness,
                    cv2.LINE_AA)
        taken.append((x1, y1, x2, y2))
    return taken


def label_texts(labels, scores=None, names=None):
    """"name score" for each detection ("name" without scores); ``names`` is indexed by label (e.g.
    with "__background" at 0), and a label outside it, or ``names`` None, is written as its id."""
    texts = []
    for i, label in enumerate(labels):
        name = names[label] if names is not None and 0 <= label < len(names) else str(label)
        texts.append(name if scores is None else "{} {:.2f}".format(name, float(scores[i])))
    return texts


def draw_detections(image, boxes, labels, scores=None, names=None):
    """Draw detections on ``image`` (BGR uint8 [H, W, 3]) in place and return it.

    Arguments:
        boxes: [N, 4] ``xyxy`` pixels; labels: [N] class ids; scores: [N] or None.
        names: a sequence indexed by label (e.g. with "__background" at 0), or None for the ids.
    Labels are written in decreasing score order, each as "name score".
    """
    boxes, labels = np.asarray(boxes, dtype=np.float64).reshape(-1, 4), [int(v) for v in labels]
    order = list(range(len(labels)))
    if scores is not None:
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist()
        scores = [scores[i] for i in order]
    boxes, labels = boxes[order], [labels[i] for i in order]
    draw_boxes(image, boxes, labels)
    draw_labels(image, boxes, labels, label_texts(labels, scores, names))
    return image


def overview_picture(picture_paths, curves_path, out_path, tile=256):
    """One small PNG of a run: up to four annotated pictures in a row of ``tile`` x ``tile``
    thumbnails over the loss-curve picture scaled to the same width (the quickstart writes it as
    OUTPUT_DIR/overview.png; the README shows it). Returns ``out_path``."""
    thumbs = []
    for path in list(picture_paths)[:4]:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError("cannot read picture {}".format(path))
        scale = tile / max(image.shape[:2])
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        canvas[:image.shape[0], :image.shape[1]] = image
        thumbs.append(canvas)
    if not thumbs:
        raise ValueError("no picture to put in the overview")
    row = np.concatenate(thumbs, axis=1)
    curves = cv2.imread(curves_path, cv2.IMREAD_COLOR)
    if curves is None:
        raise FileNotFoundError("cannot read loss curves {}".format(curves_path))
    height = round(curves.shape[0] * row.shape[1] / curves.shape[1])
    curves = cv2.resize(curves, (row.shape[1], height), interpolation=cv2.INTER_AREA)
    cv2.imwrite(out_path, np.concatenate([row, curves], axis=0))
    return out_path
