#!/usr/bin/env python
"""Convolution throughput of this CPU in float32 and bfloat16: how much faster bf16 can make FCOS.

FCOS-R-50 inference is ~95% convolutions (torch.profiler, see docs/benchmark.md), so the bf16 /
fp32 speed-up of the whole detector is bounded by the speed-up of its convolutions. This times the
convolutions that dominate it, as oneDNN runs them at test time (channels_last, batch 1, under
``torch.inference_mode``): a head-tower conv (3x3, 256 -> 256) on the P3 map of an 800 x 1333 image
(100 x 168), and two ResNet-50 backbone convs. It prints GFLOP/s (2 x multiply-adds / time, median
of ``--runs``) per dtype and the bf16 / fp32 time ratio. The convolutions and their timing are
fcos_core.benchmark.conv_throughput's (the deploy part of tools/benchmark.py uses the same).

    python tools/conv_throughput.py [--threads 2] [--runs 10]
"""
import argparse

import torch

from fcos_core.benchmark.conv_throughput import CONVS, conv_flops, time_conv


def main(argv=None):
    """Time every convolution of CONVS in fp32 and bf16; print the table; return (name, fp32 s, bf16 s) rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| convolution | fp32 ms | fp32 GFLOP/s | bf16 ms | bf16 GFLOP/s | bf16 / fp32 time |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for name, c_in, c_out, k, stride, h, w in CONVS:
        flops = conv_flops(c_in, c_out, k, stride, h, w)
        t32 = time_conv(c_in, c_out, k, stride, h, w, torch.float32, args.runs)
        t16 = time_conv(c_in, c_out, k, stride, h, w, torch.bfloat16, args.runs)
        rows.append((name, t32, t16))
        print(f"| {name} | {1e3 * t32:.1f} | {flops / t32 / 1e9:.0f} | {1e3 * t16:.1f} | {flops / t16 / 1e9:.0f} | {t16 / t32:.2f} |")
    return rows


if __name__ == "__main__":
    main()
