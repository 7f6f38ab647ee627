"""Check by hand that a config's ONNX export (with post-processing) gives the PyTorch detections, with
random weights (no download): the numbers quoted in docs/deployment.md and docs/torchvision_fcos.md.

    python docs/examples/onnx_parity_random_weights.py \
        --config-file configs/torchvision/fcos_resnet50_fpn_coco.yaml --sizes 320x416 800x1066

The class biases are raised (normal, mean --bias) so that random weights give detections beyond the
score threshold; the inputs are random normalised tensors of the given H x W (as after the test
transforms). Prints, per size, the detection counts, whether labels and order are equal, and the
largest box (pixels) and score differences.
"""
import argparse
import os
import tempfile

import numpy as np
import onnxruntime as ort
import torch

from fcos_core.config import load_config
from fcos_core.export.onnx import export_onnx, make_export_postprocessor
from fcos_core.modeling.detector import build_detection_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--sizes", nargs="+", default=["320x416"], help="H x W of the input tensors")
    parser.add_argument("--bias", type=float, default=-2.0, help="mean of the raised class biases")
    args = parser.parse_args()
    cfg = load_config(args.config_file, ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_detection_model(cfg).eval()
    with torch.no_grad():
        model.rpn.head.cls_logits.bias.normal_(args.bias, 1.0)
    path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    export_onnx(model, path, make_export_postprocessor(cfg))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(1)
    for size in args.sizes:
        h, w = (int(v) for v in size.lower().split("x"))
        image = torch.randn(1, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model(image)[0]
        boxes, scores, labels = session.run(None, {"image": image.numpy()})
        ref_boxes, ref_scores, ref_labels = (ref.bbox.numpy(), ref.get_field("scores").numpy(),
                                             ref.get_field("labels").numpy())
        same = len(boxes) == len(ref_boxes) and bool((labels == ref_labels).all())
        line = f"{h}x{w}: {len(boxes)} detections (PyTorch {len(ref_boxes)}), labels and order equal: {same}"
        if same and len(boxes):
            line += "; max box difference {:.1e} px, max score difference {:.1e}".format(
                float(np.abs(boxes - ref_boxes).max()), float(np.abs(scores - ref_scores).max()))
        print(line)


if __name__ == "__main__":
    main()
