#!/usr/bin/env python
"""Export a trained FCOS to ONNX.

    python tools/export_onnx.py --config-file F [--output model.onnx] [--no-postprocess]
        [--opset N] [KEY VALUE ...]          # e.g. MODEL.WEIGHT model.pth

    # the default model of the fcos command, torchvision's COCO FCOS (downloaded once):
    python tools/export_onnx.py --config-file configs/torchvision/fcos_resnet50_fpn_coco.yaml \
        --output fcos_resnet50_fpn_coco.onnx

The graph takes one input, ``image``: float32 [1, 3, H, W] with any H and W, the image after the
test transforms (short side INPUT.MIN_SIZE_TEST, long side at most INPUT.MAX_SIZE_TEST; the
original configs resize, then normalise to BGR 0-255 minus INPUT.PIXEL_MEAN; INPUT.RESIZE_STYLE
"torchvision" normalises RGB 0-1 with PIXEL_MEAN / PIXEL_STD, then resizes), not padded. It
returns ``boxes`` [K, 4] (xyxy, pixels of the input tensor), ``scores`` [K] and ``labels`` [K]
(1..C), highest score first: the detections of the PyTorch model, with the post-processing of the
config's MODEL.FCOS.CONVENTION (the original's, with its +1 IoU in the NMS, or torchvision's).
``--no-postprocess`` exports the backbone and head only: ``cls_logits_<l>``, ``bbox_reg_<l>``,
``centerness_<l>`` per FPN level. See fcos_core/export/onnx.py for the exact contract and the known
tie / rounding differences.

MODEL.WEIGHT may be a path, a URL or a model-zoo name (``fcos_resnet50_fpn_coco``). The class names
go into the file's metadata (``categories``, a json list, background first): from
``--categories-from`` when given, else the checkpoint's (saved by tools/train_net.py), else COCO's
for an 80-class model. MODEL.FCOS.NUM_CLASSES 0 takes the checkpoint's class count.
"""
import argparse
import os
import sys

import torch

from fcos_core.config import load_config
from fcos_core.engine.predictor import is_untrained_weight
from fcos_core.export.onnx import export_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export FCOS to ONNX")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--output", default="model.onnx", metavar="FILE", help="ONNX file to write")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="export the backbone and head only (raw per-level outputs)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default 17; 19 for models with deformable convolutions)")
    parser.add_argument("--categories-from", default=None, metavar="JSON",
                        help="COCO json naming the classes (default: the names saved in the checkpoint)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # the exported graph runs on the CPU wherever it goes; tracing on the CPU avoids device constants
    cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    if is_untrained_weight(cfg.MODEL.WEIGHT):
        print("warning: MODEL.WEIGHT is {!r}: exporting an untrained detector".format(cfg.MODEL.WEIGHT),
              file=sys.stderr)
    folder = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(folder, exist_ok=True)
    names, opset, categories = export_checkpoint(cfg, args.output, postprocess=not args.no_postprocess,
                                                 opset=args.opset, categories_from=args.categories_from)
    print("wrote {} (opset {}): input image [1, 3, H, W] -> {}; {} classes in its metadata (categories)".format(
        args.output, opset, ", ".join(names), len(categories) - 1))
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
