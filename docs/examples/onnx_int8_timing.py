"""Median seconds per image of the fp32 and int8 exports under onnxruntime, interleaved in one process."""
import argparse
import statistics
import time

import onnxruntime as ort
import torch

from fcos_core.config import load_config
from fcos_core.data.build import make_data_loader

parser = argparse.ArgumentParser()
parser.add_argument("--config-file", required=True)
parser.add_argument("--fp32", required=True)
parser.add_argument("--int8", required=True)
parser.add_argument("--images", type=int, default=10)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
cfg = load_config(args.config_file, ["DATALOADER.NUM_WORKERS", "0"])
dataset = make_data_loader(cfg, is_train=False)[0].dataset
images = [dataset[i][0][None].numpy() for i in range(args.images)]
options = ort.SessionOptions()
options.intra_op_num_threads = args.threads
sessions = {p: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            for p, path in (("fp32", args.fp32), ("int8", args.int8))}
times = {p: [] for p in sessions}
for image in images[:2]:
    for s in sessions.values():
        s.run(None, {"image": image})  # warm-up
for rep in range(3):
    for image in images:
        for p, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"image": image})
            times[p].append(time.perf_counter() - t)
for p in times:
    print("{}: median {:.4f} s/img over {} runs".format(p, statistics.median(times[p]), len(times[p])))
print("int8 / fp32: {:.2f}".format(statistics.median(times["int8"]) / statistics.median(times["fp32"])))
