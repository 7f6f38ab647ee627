"""Run an FCOS model exported by tools/export_onnx.py with onnxruntime alone (no torch, no fcos_core).

Stands for the deployment side in docs/custom_dataset.md: it does the test transforms the graph
leaves out (docs/deployment.md), names the labels from the file's metadata and prints one line per
detection with the box in pixels of the original image.

    python docs/examples/run_onnx.py model.onnx img1.jpg [img2.jpg ...] --min-size 448 --max-size 784
    # a graph of configs/torchvision/fcos_resnet50_fpn_coco.yaml (the fcos command's default model)
    python docs/examples/run_onnx.py fcos_resnet50_fpn_coco.onnx img.jpg --torchvision --min-size 800 --max-size 1333

The defaults of --min-size, --max-size and --pixel-mean are those of
configs/quickstart/fcos_shapes.yaml (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST, INPUT.PIXEL_MEAN,
INPUT.TO_BGR255 True, INPUT.PIXEL_STD 1): pass your config's values. ``--torchvision`` is
INPUT.RESIZE_STYLE "torchvision" with TO_BGR255 False: RGB 0-1 normalised with --pixel-mean and
--pixel-std (default ImageNet's), then resized bilinearly by the float scale
``min(min_size / short side, max_size / long side)`` to ``floor(side * scale)`` (``TensorResize``).
"""
import argparse
import json
import math

import cv2
import numpy as np
import onnxruntime as ort


def test_size(height, width, min_size, max_size):
    """(new height, new width): short side min_size, long side at most max_size (maskrcnn-benchmark's Resize)."""
    short, long = min(height, width), max(height, width)
    size = min_size
    if long / short * size > max_size:
        size = int(round(max_size * short / long))
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess(image_bgr, min_size, max_size, pixel_mean):
    """BGR uint8 (H, W, 3) -> (float32 tensor [1, 3, h, w], scale x, scale y) of the resized image."""
    h, w = test_size(image_bgr.shape[0], image_bgr.shape[1], min_size, max_size)
    resized = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    tensor = (resized - np.asarray(pixel_mean, np.float32)).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor), image_bgr.shape[1] / w, image_bgr.shape[0] / h


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # RGB 0-1


def preprocess_torchvision(image_bgr, min_size, max_size, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD):
    """BGR uint8 (H, W, 3) -> (float32 tensor [1, 3, h, w], scale x, scale y), as torchvision's detection
    models prepare an image: RGB 0-1, normalised, then resized (bilinear, half-pixel centres, no
    antialiasing) by one float scale to sides ``floor(side * scale)``."""
    height, width = image_bgr.shape[:2]
    scale = min(min_size / min(height, width), max_size / max(height, width))
    h, w = math.floor(height * scale), math.floor(width * scale)
    rgb = image_bgr[:, :, ::-1].astype(np.float32) / 255.0
    normalised = (rgb - np.asarray(pixel_mean, np.float32)) / np.asarray(pixel_std, np.float32)
    resized = cv2.resize(normalised, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None]), width / w, height / h


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--min-size", type=int, default=448)
    parser.add_argument("--max-size", type=int, default=784)
    parser.add_argument("--pixel-mean", type=float, nargs=3, default=None,
                        help="default: the quickstart's BGR mean, or ImageNet's RGB mean with --torchvision")
    parser.add_argument("--pixel-std", type=float, nargs=3, default=IMAGENET_STD, help="with --torchvision only")
    parser.add_argument("--torchvision", action="store_true",
                        help="torchvision's preprocessing (INPUT.RESIZE_STYLE torchvision, RGB 0-1)")
    parser.add_argument("--threshold", type=float, default=0.3, help="minimum score printed")
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    names = json.loads(session.get_modelmeta().custom_metadata_map["categories"])
    print(f"{args.model}: classes {names[1:]}")
    for path in args.images:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"could not read {path}")
        if args.torchvision:
            tensor, sx, sy = preprocess_torchvision(image, args.min_size, args.max_size,
                                                    args.pixel_mean or IMAGENET_MEAN, args.pixel_std)
        else:
            tensor, sx, sy = preprocess(image, args.min_size, args.max_size,
                                        args.pixel_mean or [102.9801, 115.9465, 122.7717])
        boxes, scores, labels = session.run(["boxes", "scores", "labels"], {"image": tensor})
        keep = scores >= args.threshold
        print(f"{path}: {int(keep.sum())} detections with score >= {args.threshold}")
        for box, score, label in zip(boxes[keep], scores[keep], labels[keep]):
            x1, y1, x2, y2 = box * [sx, sy, sx, sy]
            print(f"  {names[label]:<8} {score:.2f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")


if __name__ == "__main__":
    main()
