"""One 3x3 stride-1 convolution, direct (oneDNN via F.conv2d) against Winograd F(4x4, 3x3)
(fcos_core.layers.winograd, TEST.WINOGRAD), float32, channels_last, batch 1, at the shapes FCOS runs
at 800 x 1216: the head towers on P3-P5 (256 -> 256) and ResNet's first stage (64 -> 64). Interleaved
rounds, median; prints the time of each and the ratio, and the largest difference from a float64
direct convolution relative to the output's scale.

    python docs/examples/winograd_vs_direct.py [--threads 2] [--runs 9]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

from fcos_core.benchmark.timing import interleaved
from fcos_core.layers.winograd import winograd_conv3x3, winograd_filter_transform

SHAPES = ((256, 100, 152), (256, 50, 76), (256, 25, 38), (64, 200, 304))  # (channels, H, W)

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--runs", type=int, default=9)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
print(f"{torch.get_num_threads()} threads, median of {args.runs} interleaved rounds")
print("| channels | H x W | direct ms | Winograd ms | Winograd / direct | max error / scale |")
print("|---:|---|---:|---:|---:|---:|")
for c, h, w in SHAPES:
    x = torch.randn(1, c, h, w).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, c, 3, 3) * (2.0 / (9 * c)) ** 0.5
    bias = torch.randn(c)
    u = winograd_filter_transform(weight)
    weight_cl = weight.contiguous(memory_format=torch.channels_last)
    fns = {"direct": lambda: F.conv2d(x, weight_cl, bias, padding=1), "winograd": lambda: winograd_conv3x3(x, u, bias)}
    with torch.inference_mode():
        times = interleaved(fns, args.runs, 2, "cpu", rotate=True)
        exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
        err = (winograd_conv3x3(x, u, bias).double() - exact).abs().max() / exact.abs().max()
    direct, wino = statistics.median(times["direct"]), statistics.median(times["winograd"])
    print(f"| {c} | {h} x {w} | {direct * 1e3:.2f} | {wino * 1e3:.2f} | {wino / direct:.2f} | {err:.1e} |")
