#!/usr/bin/env python
"""INT8 post-training static quantization of a trained FCOS's ONNX export (onnxruntime, QDQ).

    python tools/quantize_onnx.py --config-file F [--calib-images N] [--output FILE] [KEY VALUE ...]

    # the quickstart model, then its AP under onnxruntime in int8:
    python tools/quantize_onnx.py --config-file configs/quickstart/fcos_shapes.yaml \
        MODEL.WEIGHT output/quickstart/model_final.pth
    python tools/test_net.py --config-file configs/quickstart/fcos_shapes.yaml \
        MODEL.WEIGHT output/quickstart/model_final.pth TEST.BACKEND onnxruntime \
        TEST.ONNX_PRECISION int8 TEST.IMS_PER_BATCH 1

The float32 export (post-processing included) is made or taken from the export cache
(TEST.ONNX_CACHE_DIR), its convolutions are calibrated on N images (default 300) of
DATASETS.TRAIN through the test transforms, and the int8 file is written atomically beside the
cached export, where TEST.ONNX_PRECISION int8 finds it (``--output`` writes it elsewhere instead,
e.g. to ship it). See fcos_core/export/quantize.py.
"""
import argparse
import logging
import os
import sys

import torch

from fcos_core.config import load_config
from fcos_core.engine.classes import resolve_num_classes_for_inference
from fcos_core.export.quantize import quantize_checkpoint
from fcos_core.utils.model_zoo import resolve_weight


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="INT8 static quantization of the FCOS ONNX export")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a config file")
    parser.add_argument("--calib-images", type=int, default=300, metavar="N",
                        help="calibration images from DATASETS.TRAIN (default 300)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="int8 file to write (default: beside the cached export, for TEST.ONNX_PRECISION int8)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # onnxruntime's quantizer logs a line per tensor at INFO on the root logger: warnings only there
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("fcos_core").setLevel(logging.INFO)
    cfg = load_config(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    weight = resolve_weight(cfg.MODEL.WEIGHT) if cfg.MODEL.WEIGHT else ""
    if not weight or not os.path.isfile(weight):
        print("error: MODEL.WEIGHT {!r} is not a weight file".format(cfg.MODEL.WEIGHT), file=sys.stderr)
        return 2
    cfg = resolve_num_classes_for_inference(cfg, weight)
    int8, fp32 = quantize_checkpoint(cfg, weight, args.calib_images, args.output)
    print("wrote {}: {:.2f} MB (float32 export {}: {:.2f} MB, {:.2f}x smaller)".format(
        int8, os.path.getsize(int8) / 1e6, fp32, os.path.getsize(fp32) / 1e6,
        os.path.getsize(fp32) / os.path.getsize(int8)))
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
