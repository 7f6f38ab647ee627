#!/usr/bin/env python
"""Where the time of one FCOS inference goes: torch.profiler's op table for ours, as benchmarked.

Builds ours exactly as ``tools/benchmark.py --only inference`` does (``fcos_R_50_FPN_1x``, random
weights, one 800 x 1333 image, prepared and run as tools/test_net.py runs it: folded batch norms,
SOLVER.CHANNELS_LAST), times a few forwards, then profiles one and prints the ops by self CPU time
and the convolutions' share.

    python tools/profile_inference.py [--bf16] [--opts SOLVER.CHANNELS_LAST False] [--rows 15]
"""
import argparse
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

# the same model, image and preparation as tools/benchmark.py
from fcos_core.benchmark.inference import ours_inference_options
from fcos_core.benchmark.models import OURS_CONFIG, build_ours, make_image, to_ours
from fcos_core.benchmark.timing import interleaved

CONV_OPS = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d", "aten::_nnpack_spatial_convolution",
            "aten::cudnn_convolution",
            "mkldnn::_convolution_pointwise", "mkldnn::_convolution_pointwise_",  # TEST.COMPILE's prepacked convs
            "fcos_core::winograd_conv3x3", "aten::bmm")  # TEST.WINOGRAD's transforms and GEMMs


def main(argv=None):
    """Time, then profile, one forward of ours; print the op table; return the median, conv share and ops."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bf16", action="store_true", help="TEST.AMP True (bfloat16 autocast on a CPU)")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=3, help="timed forwards before the profiled one")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides for ours, KEY VALUE ...")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from fcos_core.engine.inference import forward_for_inference, prepare_for_inference

    model, cfg = build_ours("cpu", *args.opts)
    opts = ours_inference_options(cfg, "bf16" if args.bf16 else "fp32", "cpu")
    model = prepare_for_inference(model.eval(), opts.fuse_bn, opts.channels_last, opts.compile, opts.winograd)
    x = to_ours(make_image(tuple(args.size), 0), cfg)

    def run():
        with torch.inference_mode():
            return forward_for_inference(model, [x], "cpu", opts.amp_dtype, opts.channels_last)

    times = interleaved({"ours": run}, args.runs, 1, "cpu")["ours"]  # after one warm-up call
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    print(f"ours {OURS_CONFIG}, {args.size[0]}x{args.size[1]}, autocast {opts.amp_dtype}, "
          f"channels_last {opts.channels_last}, folded norms {opts.fuse_bn}, compiled {opts.compile}, "
          f"winograd {opts.winograd}, {torch.get_num_threads()} threads")
    print(f"forward: median {statistics.median(times):.3f} s of {args.runs}; profiled: {total / 1e6:.3f} s of CPU time, "
          f"convolutions {100 * conv / total:.1f}%")
    print("| op | self CPU ms | share | calls |")
    print("|---|---:|---:|---:|")
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]
    for e in rows:
        print(f"| {e.key} | {e.self_cpu_time_total / 1e3:.1f} | {100 * e.self_cpu_time_total / total:.1f}% | {e.count} |")
    return {"median_s": statistics.median(times), "conv_share": conv / total, "ops": [e.key for e in rows]}


if __name__ == "__main__":
    main()
