#!/usr/bin/env python
"""Benchmark FCOS (this codebase) against torchvision's detectors, as ratios measured in one process.

Parts (``--only`` runs one of them; by default the first three, and ``accuracy`` too when
``--weights`` is given; ``deploy`` only with ``--only deploy``: it exports a 130 MB ONNX graph,
quantizes it and compiles the model, minutes before the first timed round):

* ``inference``: time per image, eval mode, ``torch.inference_mode``, batch 1, one image of
  ``--size H W`` (default 800 x 1333), no data loading. Ours: ``fcos_R_50_FPN_1x`` (backbone, head
  and the full post-processing with the config's INFERENCE_TH 0.05, PRE_NMS_TOP_N 1000, NMS_TH
  0.6, 100 detections) on an already normalised tensor (BGR 0-255 minus PIXEL_MEAN), prepared as
  tools/test_net.py prepares it (TEST.FUSE_FROZEN_BN: the backbone's FrozenBatchNorm2d folded into
  the convs; torchvision keeps its FrozenBatchNorm2d layers, it has no such option; weights and
  input in channels_last, SOLVER.CHANNELS_LAST, on by default; torchvision in its default NCHW). torchvision:
  ``fcos_resnet50_fpn``, ``retinanet_resnet50_fpn`` and ``fasterrcnn_resnet50_fpn`` called on a list
  of one [3, H, W] tensor in [0, 1] (the same image) with ``transform.min_size = (min(H, W),)`` and
  ``transform.max_size = max(H, W)`` so that their transform does not change the size; their time
  INCLUDES that ``GeneralizedRCNNTransform`` (normalisation, an identity-scale resize, padding),
  which is also timed alone in its own row.
  A second precision is timed where it is fast: on CUDA "amp" (float16 autocast for every model);
  on a CPU with native bfloat16 (``fcos_core.utils.env.cpu_has_fast_bf16``: AVX-512 BF16 or AMX)
  "bf16": ours as tools/test_net.py runs it with TEST.AMP True (``make_inference_options``,
  ``prepare_for_inference`` and ``forward_for_inference`` of fcos_core.engine.inference: bfloat16
  autocast, folded batch norms, channels_last weights and input), torchvision's detectors (and
  transform) under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with channels_last weights. On
  other CPUs the bf16 rows are skipped, with a line saying why. A summary line gives ours in that
  precision / torchvision FCOS in fp32 (the goal for bf16: at most 0.3x) and / ours in fp32.
* ``train``: one training step (forward with losses, backward, SGD step with momentum 0.9, weight
  decay 1e-4), batch 2 of one size, 3-5 random boxes per image; ours vs torchvision FCOS and
  RetinaNet. Ours runs as tools/train_net.py runs it: model and batched images in channels_last
  (SOLVER.CHANNELS_LAST, the default), frozen batch norms folded into the convolutions
  (``fcos_core.layers.batch_norm.conv_then_norm``); torchvision as its builders make it. Peak memory is measured in a child process per model (``python -m
  fcos_core.benchmark.memory --child MODEL``) after one warm-up step: on CPU the peak of allocated tensor memory during one
  step above what was allocated before it (``torch.profiler`` with ``profile_memory=True``: the
  running sum of its allocation and free events), plus the tensors held between steps (parameters,
  buffers, momentum) and the child's peak resident set size (VmHWM); on CUDA
  ``torch.cuda.max_memory_allocated``.
* ``ops``: ``ml_nms`` vs ``torchvision.ops.batched_nms`` and the sigmoid focal loss vs
  ``torchvision.ops.sigmoid_focal_loss``, as ``tools/benchmark_ops.py`` measures them
  (``fcos_core.benchmark.ops``).
* ``accuracy`` (needs ``--weights PATH``, a model trained with ``--accuracy-config``, default
  configs/quickstart/fcos_shapes.yaml, e.g. output/quickstart/model_final.pth): COCO AP on the
  config's DATASETS.TEST (shapes_val) in fp32 and with TEST.AMP True (bfloat16 on a CPU, float16 on
  CUDA), each evaluated as tools/test_net.py evaluates it (``load_model_for_test``, then ``run_test``
  of fcos_core.engine.defaults), and the difference in AP points (the goal: within 0.5).

* ``deploy`` (CPU only): one image of ``--size``, every row the whole detector with post-processing:
  ours as tools/test_net.py runs it in fp32 and bf16 (TEST.AMP), with TEST.COMPILE, and in fp32 with
  TEST.WINOGRAD (eager and compiled); its ONNX export
  under onnxruntime (fp32, int8) and OpenVINO (fp32, bf16 precision hint, int8; int8 calibrated on
  ``--int8-calib-images`` variants of the image); torchvision ``fcos_resnet50_fpn`` fp32 and bf16. Columns:
  s/img, this / ours fp32, this / OpenVINO in the same precision, and the fraction of the CPU's
  convolution throughput (measured in the same process, fcos_core.benchmark.conv_throughput) each row
  reaches; the header names the CPU and its AMX / AVX-512 BF16 / VNNI flags; a summary line gives ours
  compiled + Winograd / OpenVINO in fp32 and ours compiled / OpenVINO in bf16 against the goals (1.0x, 1.2x). bf16 rows are skipped on a CPU
  without native bfloat16, a runtime's rows when it is not installed, ``--deploy-skip`` groups on
  request, each with its reason (``fcos_core.benchmark.deploy``).

Fairness (the same for every model):

* same thread count (``--threads``, default ``torch.get_num_threads()``), same process, same image;
* interleaved: each round runs every model once (A B C D A B C D ...); ``--warmup`` rounds are
  discarded, the median of ``--runs`` rounds is reported; ratios are ours / theirs (below 1: ours
  is faster / smaller): the ratio of the medians, and the median over rounds of the ratio within
  a round ("per round"), which is less sensitive to load that changes between rounds;
* torchvision models are built with ``weights=None, weights_backbone=None`` and then given the
  backbone configuration their builders use with an ImageNet backbone (as ours has): BatchNorm
  replaced by ``FrozenBatchNorm2d``, stem and ``layer1`` frozen (3 trainable layers, like our
  FREEZE_CONV_BODY_AT 2). FCOS and RetinaNet predict 80 classes, Faster R-CNN 80 + background;
* inference weights: torchvision FCOS's random weights are mapped into ours (same keys as the
  released checkpoints), so both FCOS models have the same weights except the classification bias.
  Random weights make post-processing either trivial (no score above the threshold) or
  pathological, so each model's classifier is calibrated on the benchmark image so that
  ``--candidate-fraction`` (default 1%) of its (location or anchor or proposal, class) scores pass
  its own score threshold: ours sigmoid(cls) > 0.05; torchvision FCOS sqrt(sigmoid(cls) *
  sigmoid(centerness)) > 0.2; RetinaNet sigmoid(cls) > 0.05 (by shifting the classification bias);
  Faster R-CNN softmax foreground probability > 0.05 (by scaling its class logits). The number of
  scores above threshold and the final detections are reported per model.

Examples::

    python tools/benchmark.py --only inference                       # 800 x 1333, 5 runs
    python tools/benchmark.py --only train --size 512 672 --runs 3
    python tools/benchmark.py --size 320 480 --runs 3 --json out.json --markdown out.md
    python tools/benchmark.py --only accuracy --weights output/quickstart/model_final.pth
    python tools/benchmark.py --only deploy --size 800 1216 --json deploy.json --markdown deploy.md

The parts are fcos_core.benchmark's (inference, train, ops, accuracy, deploy; report writes the tables);
this script parses the options and writes the outputs.
"""
import argparse
import json
from collections import OrderedDict

import torch

from fcos_core.benchmark.accuracy import ACCURACY_CONFIG, bench_accuracy
from fcos_core.benchmark.deploy import SKIP_GROUPS, bench_deploy
from fcos_core.benchmark.inference import bench_inference, inference_summary
from fcos_core.benchmark.ops import bench_ops
from fcos_core.benchmark.report import machine_info, markdown
from fcos_core.benchmark.train import bench_train


def parse_args(argv=None):
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads, for every model")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[800, 1333], help="image size (default 800 1333)")
    parser.add_argument("--runs", type=int, default=5, help="timed interleaved rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds before timing")
    parser.add_argument("--only", choices=["inference", "train", "ops", "accuracy", "deploy"], help="run one part only")
    parser.add_argument("--candidate-fraction", type=float, default=0.01, help="fraction of class scores above threshold (inference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torchvision-channels-last", action="store_true",
                        help="inference: torchvision's detectors in channels_last in fp32 too (a fairness check: ours "
                             "runs channels_last by default; by default torchvision runs in its own NCHW)")
    parser.add_argument("--no-memory", action="store_true", help="train: skip the per-model peak-memory child processes")
    parser.add_argument("--weights", metavar="PATH", help="accuracy: a trained model (e.g. output/quickstart/model_final.pth)")
    parser.add_argument("--accuracy-config", metavar="FILE", default=ACCURACY_CONFIG,
                        help="accuracy: the config the model was trained with (default %(default)s)")
    parser.add_argument("--deploy-skip", nargs="+", default=[], choices=SKIP_GROUPS, metavar="GROUP",
                        help="deploy: rows not to run, by group: " + ", ".join(SKIP_GROUPS))
    parser.add_argument("--int8-calib-images", type=int, default=8,
                        help="deploy: variants of the image the int8 export is calibrated on (default %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the markdown table")
    args = parser.parse_args(argv)
    if args.only == "accuracy" and not args.weights:
        parser.error("--only accuracy needs --weights PATH (a model trained with --accuracy-config)")
    if args.only == "deploy" and args.device != "cpu":
        parser.error("--only deploy runs on the CPU (--device cpu)")
    if args.int8_calib_images <= 0:
        parser.error("--int8-calib-images must be positive, got {}".format(args.int8_calib_images))
    return args


def main(argv=None):
    """Run the parts asked for; print the markdown, write --json / --markdown; return the results."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is available")
    torch.set_num_threads(args.threads)
    info = machine_info(args)
    result = OrderedDict(info=info)
    inference = train = ops = ops_note = summary = accuracy = accuracy_note = deploy = None
    if args.only in (None, "inference"):
        inference = result["inference"] = bench_inference(args)
        summary = result["inference_summary"] = inference_summary(inference, args.device)
    if args.only in (None, "train"):
        train = result["train"] = bench_train(args)
    if args.only in (None, "ops"):
        ops, ops_note = bench_ops(args)
        result["ops"], result["ops_note"] = ops, ops_note
    if args.only in (None, "accuracy"):
        if args.weights:
            accuracy = result["accuracy"] = bench_accuracy(args)
        else:
            accuracy_note = result["accuracy_note"] = "skipped: no --weights (a trained model) given"
    if args.only == "deploy":
        deploy = result["deploy"] = bench_deploy(args)
    text = markdown(info, inference, train, ops, ops_note, summary, accuracy, accuracy_note, deploy)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
