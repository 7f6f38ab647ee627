"""Where the time of ours compiled (TEST.COMPILE) and of OpenVINO goes, on the same dense graph.

Backbone + FPN + head of ``--config-file`` (random weights; the post-processing left out, so both
sides run the same work), one ``--size`` image, ``--threads`` threads. Ours: prepared as
tools/test_net.py prepares it with TEST.COMPILE True (folded norms, channels_last, inductor with
frozen weights), profiled by torch.profiler, time per op name. OpenVINO: the same module exported to
ONNX (head outputs, no post-processing), f32 precision hint, PERF_COUNT per-node times by node type
and implementation. Prints both splits and the convolutions' share.

    python docs/examples/compiled_vs_openvino_profile.py --config-file configs/fcos/fcos_imprv_R_50_FPN_1x.yaml
"""
import argparse
import collections
import os
import tempfile

import openvino as ov
import torch

from fcos_core.config import load_config
from fcos_core.engine.inference import prepare_for_inference
from fcos_core.modeling.detector import build_detection_model


class Dense(torch.nn.Module):
    """backbone + head of a detector: forward(image [1, 3, H, W]) -> tuple of the head's per-level outputs."""

    def __init__(self, model):
        super().__init__()
        self.backbone, self.head = model.backbone, model.rpn.head

    def forward(self, image):
        logits, boxes, centerness = self.head(self.backbone(image))
        return tuple(logits) + tuple(boxes) + tuple(centerness)


parser = argparse.ArgumentParser()
parser.add_argument("--config-file", default="configs/fcos/fcos_imprv_R_50_FPN_1x.yaml")
parser.add_argument("--size", type=int, nargs=2, default=[800, 1216])
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
cfg = load_config(args.config_file, ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"])
model = build_detection_model(cfg).eval()
image = torch.randn(1, 3, *args.size)
with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
    path = os.path.join(folder, "dense.onnx")
    torch.onnx.export(Dense(model).eval(), (image,), path, dynamo=False, opset_version=17, input_names=["image"])
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads, "PERF_COUNT": True}
    request = core.compile_model(core.read_model(path), "CPU", config).create_infer_request()
compiled = Dense(prepare_for_inference(model, fuse_bn=True, channels_last=True, compile=True))
x = image.contiguous(memory_format=torch.channels_last)
with torch.inference_mode():
    compiled(x)
    compiled(x)
    with torch.profiler.profile() as prof:
        compiled(x)
ours = collections.Counter()
for event in prof.key_averages():
    ours[event.key] += event.self_cpu_time_total / 1e3
request.infer({"image": image.numpy()})
request.infer({"image": image.numpy()})
theirs = collections.Counter()
for node in request.get_profiling_info():
    theirs["{} ({})".format(node.node_type, node.exec_type)] += node.real_time.total_seconds() * 1e3
for name, split in (("ours, TEST.COMPILE (torch.profiler self CPU ms)", ours), ("OpenVINO f32 (PERF_COUNT ms)", theirs)):
    total = sum(split.values())
    conv = sum(v for k, v in split.items() if "conv" in k.lower())
    print("{}: total {:.0f} ms, convolutions {:.0f} ms ({:.0%})".format(name, total, conv, conv / total))
    for key, ms in split.most_common(6):
        print("    {:>8.1f}  {}".format(ms, key))
