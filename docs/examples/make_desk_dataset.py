"""Write a small "desk" detection dataset the way an annotation tool exports one.

This stands for *your own data* in docs/custom_dataset.md: it imports only numpy, OpenCV and
json (nothing from fcos_core) and writes what labelling tools and converters typically write:

    <out>/images/session1/img_0001.jpg ...   JPEG images in sub-folders (train: session1-2,
                                              val: session3)
    <out>/train.json, <out>/val.json          COCO json: images (id, file_name with the sub-folder,
                                              width, height), annotations (id, image_id,
                                              category_id, bbox [x, y, w, h] in pixels) and
                                              categories; NO "area" and NO "iscrowd"

Four classes with non-contiguous ids (coin 3, key 7, pen 12, die 20) lie on wood or paper
textures; one image in 12 holds no object (a negative: the 6th, 18th, ...). Boxes are the tight bounds of each
object's drawn pixels. The same --seed writes the same files.

    python docs/examples/make_desk_dataset.py --out datasets/desk --train 400 --val 100
"""
import argparse
import json
import math
import os

import cv2
import numpy as np

CATEGORIES = [{"id": 3, "name": "coin"}, {"id": 7, "name": "key"},
              {"id": 12, "name": "pen"}, {"id": 20, "name": "die"}]
NEGATIVE_EVERY = 12  # images 6, 18, 30, ... of each split hold no object (8%)
JPEG_QUALITY = 88


def wood_texture(rng, h, w):
    """A wood-grain background: (h, w, 3) uint8 BGR, streaks along x with wavy rings."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    freq = rng.uniform(0.08, 0.2)
    wave = 6.0 * np.sin(x * rng.uniform(0.01, 0.03) + rng.uniform(0, 6.3))
    grain = 0.5 + 0.5 * np.sin((y + wave) * freq + 2.0 * np.sin(x * 0.005))
    grain += rng.normal(0, 0.08, (h, w)).astype(np.float32)
    base = np.array([rng.uniform(40, 90), rng.uniform(80, 130), rng.uniform(130, 190)], np.float32)
    img = base[None, None, :] * (0.75 + 0.35 * grain[..., None])
    return np.clip(img, 0, 255).astype(np.uint8)


def paper_texture(rng, h, w):
    """A light paper background with fibres and sometimes ruled lines: (h, w, 3) uint8 BGR."""
    tone = rng.uniform(200, 245)
    img = np.full((h, w, 3), tone, np.float32) + rng.normal(0, 5, (h, w, 1)).astype(np.float32)
    img[..., 0] -= rng.uniform(0, 25)  # a warm cast
    img = cv2.GaussianBlur(img, (3, 3), 0)
    if rng.random() < 0.5:
        step = int(rng.integers(18, 30))
        for yy in range(step, h, step):
            cv2.line(img, (0, yy), (w, yy), (200, 170, 150), 1)
    return np.clip(img, 0, 255).astype(np.uint8)


def rotated_rect(cx, cy, length, width, angle):
    """The 4 corners (int32, shape (4, 2)) of a rectangle centred at (cx, cy), rotated by angle radians."""
    c, s = math.cos(angle), math.sin(angle)
    pts = []
    for dx, dy in ((-length / 2, -width / 2), (length / 2, -width / 2),
                   (length / 2, width / 2), (-length / 2, width / 2)):
        pts.append((cx + dx * c - dy * s, cy + dx * s + dy * c))
    return np.round(np.array(pts)).astype(np.int32)


def draw_coin(img, mask, rng, cx, cy, size):
    """A metallic disc of diameter `size` with a rim and a highlight."""
    r = max(4, int(size / 2))
    colour = [(40, 160, 200), (190, 190, 190), (60, 110, 180)][int(rng.integers(3))]
    cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), max(2, int(r * 0.8)), tuple(int(v * 0.75) for v in colour), 1, cv2.LINE_AA)
    cv2.circle(img, (cx - r // 3, cy - r // 3), max(1, r // 4), (235, 235, 235), -1, cv2.LINE_AA)
    cv2.circle(mask, (cx, cy), r, 255, -1)


def draw_key(img, mask, rng, cx, cy, size):
    """A key: a ring bow, a shaft and teeth, at a random angle; `size` is its length in pixels."""
    a = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(a), math.sin(a)
    colour = (60, 170, 200) if rng.random() < 0.5 else (170, 170, 160)
    bow_r = max(3, int(size * 0.2))
    bx, by = int(cx - c * size * 0.3), int(cy - s * size * 0.3)
    shaft = rotated_rect(cx + c * size * 0.15, cy + s * size * 0.15, size * 0.6, max(3, size * 0.08), a)
    teeth = rotated_rect(cx + c * size * 0.32, cy + s * size * 0.32 + 0.0, size * 0.2, size * 0.2, a)
    teeth = teeth + np.round([[-s * size * 0.06, c * size * 0.06]]).astype(np.int32)
    for canvas, col in ((img, colour), (mask, 255)):
        cv2.circle(canvas, (bx, by), bow_r, col, max(2, bow_r // 2), cv2.LINE_AA)
        cv2.fillPoly(canvas, [shaft, teeth], col, cv2.LINE_AA)


def draw_pen(img, mask, rng, cx, cy, size):
    """A pen: a long thin body with a darker cap, `size` long, at a random angle."""
    a = rng.uniform(0, math.pi)
    colour = [(160, 60, 20), (30, 30, 30), (40, 40, 190), (40, 140, 40)][int(rng.integers(4))]
    body = rotated_rect(cx, cy, size, max(4, size * 0.09), a)
    cap = rotated_rect(cx + math.cos(a) * size * 0.38, cy + math.sin(a) * size * 0.38,
                       size * 0.24, max(5, size * 0.11), a)
    tip = np.round([[cx - math.cos(a) * size * 0.62, cy - math.sin(a) * size * 0.62],
                    body[0], body[3]]).astype(np.int32)
    for canvas, col, capcol in ((img, colour, tuple(int(v * 0.5) for v in colour)), (mask, 255, 255)):
        cv2.fillPoly(canvas, [body, tip], col, cv2.LINE_AA)
        cv2.fillPoly(canvas, [cap], capcol, cv2.LINE_AA)


def draw_die(img, mask, rng, cx, cy, size):
    """A die seen from above: a rotated ivory square with 1-6 black pips."""
    a = rng.uniform(0, math.pi / 2)
    square = rotated_rect(cx, cy, size, size, a)
    cv2.fillPoly(img, [square], (215, 235, 240), cv2.LINE_AA)
    cv2.polylines(img, [square], True, (150, 160, 170), 1, cv2.LINE_AA)
    cv2.fillPoly(mask, [square], 255)
    grid = {1: [(0, 0)], 2: [(-1, -1), (1, 1)], 3: [(-1, -1), (0, 0), (1, 1)],
            4: [(-1, -1), (1, -1), (-1, 1), (1, 1)], 5: [(-1, -1), (1, -1), (0, 0), (-1, 1), (1, 1)],
            6: [(-1, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (1, 1)]}[int(rng.integers(1, 7))]
    c, s, d = math.cos(a), math.sin(a), size * 0.27
    for gx, gy in grid:
        px, py = cx + (gx * c - gy * s) * d, cy + (gx * s + gy * c) * d
        cv2.circle(img, (int(round(px)), int(round(py))), max(1, int(size * 0.08)), (20, 20, 20), -1, cv2.LINE_AA)


DRAW = {3: (draw_coin, (14, 50)), 7: (draw_key, (24, 80)), 12: (draw_pen, (40, 130)), 20: (draw_die, (14, 44))}


def draw_image(rng, negative=False):
    """One scene: (BGR uint8 image, list of (category_id, [x, y, w, h])) with boxes from the drawn
    pixels; no object when `negative`."""
    h, w = int(rng.integers(240, 321)), int(rng.integers(300, 427))
    img = wood_texture(rng, h, w) if rng.random() < 0.6 else paper_texture(rng, h, w)
    objects = []
    if negative:
        return img, objects
    taken = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 7))):
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]["id"]
        draw, (lo, hi) = DRAW[cat]
        size = int(rng.integers(lo, hi + 1))
        cx, cy = int(rng.integers(size // 2, w - size // 2)), int(rng.integers(size // 2, h - size // 2))
        mask = np.zeros((h, w), np.uint8)
        layer = img.copy()
        draw(layer, mask, rng, cx, cy, size)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0 or (taken[ys, xs] > 0).mean() > 0.05:
            continue  # would cover another object: skip it, as a person would not label it
        shifted = np.zeros_like(mask)
        shifted[3:, 3:] = mask[:-3, :-3]  # a soft shadow 3 px down and right
        shadow = cv2.GaussianBlur(shifted, (7, 7), 0).astype(np.float32) / 510.0
        img = (img.astype(np.float32) * (1.0 - shadow[..., None])).astype(np.uint8)
        img[mask > 0] = layer[mask > 0]
        taken |= mask
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        objects.append((cat, [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]))
    return img, objects


def write_split(out, name, folders, num_images, rng):
    """Write num_images JPEGs spread over `folders` and <out>/<name>.json; returns the json's path."""
    images, annotations = [], []
    for i in range(num_images):
        img, objects = draw_image(rng, negative=i % NEGATIVE_EVERY == NEGATIVE_EVERY // 2 - 1)
        file_name = f"{folders[i % len(folders)]}/img_{i + 1:04d}.jpg"
        path = os.path.join(out, "images", file_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"could not write {path}")
        images.append({"id": i + 1, "file_name": file_name, "width": img.shape[1], "height": img.shape[0]})
        for cat, box in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat, "bbox": box})
    json_path = os.path.join(out, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    negatives = num_images - len({a["image_id"] for a in annotations})
    print(f"{json_path}: {num_images} images ({negatives} without objects), {len(annotations)} boxes")
    return json_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="datasets/desk", help="output folder (default datasets/desk)")
    parser.add_argument("--train", type=int, default=400, help="number of training images")
    parser.add_argument("--val", type=int, default=100, help="number of validation images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    write_split(args.out, "train", ["session1", "session2"], args.train, rng)
    write_split(args.out, "val", ["session3"], args.val, rng)


if __name__ == "__main__":
    main()
