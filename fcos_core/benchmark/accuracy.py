"""The accuracy part of the benchmark: COCO AP of a trained model in fp32 and with TEST.AMP True,
each evaluated as tools/test_net.py evaluates it (fcos_core.engine.defaults)."""
import os
import sys
import time
from collections import OrderedDict

from fcos_core.benchmark.models import ROOT
from fcos_core.utils import env as fcos_env

ACCURACY_CONFIG = os.path.join("configs", "quickstart", "fcos_shapes.yaml")
ACCURACY_GOAL_POINTS = 0.5  # issue 7: reduced-precision AP within 0.5 points of fp32
COCO_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def bench_accuracy(args):
    """COCO AP of a trained model (``--weights``) on its config's DATASETS.TEST, in fp32 and with
    TEST.AMP True, each evaluated exactly as ``tools/test_net.py --config-file <--accuracy-config>
    MODEL.WEIGHT <--weights> [TEST.AMP True]`` evaluates it (``load_model_for_test`` and ``run_test``
    of fcos_core.engine.defaults: fcos_core.engine.inference and the COCO evaluation), with
    OUTPUT_DIR "" (no files written). On a CPU TEST.AMP_DTYPE is bfloat16 (where the CPU has no native
    bfloat16 it is emulated: the AP is that of bfloat16, its time is not); on CUDA float16.
    """
    from fcos_core.config import cfg as default_cfg
    from fcos_core.engine.defaults import load_model_for_test, run_test
    from fcos_core.engine.inference import make_inference_options

    config = args.accuracy_config
    if not os.path.isabs(config) and not os.path.exists(config):
        config = os.path.join(ROOT, config)
    base = default_cfg.clone()
    base.merge_from_file(config)
    base.merge_from_list(["MODEL.WEIGHT", os.path.abspath(args.weights), "MODEL.DEVICE", args.device, "OUTPUT_DIR", ""])
    if args.device == "cuda":
        reduced_label, reduced_opts = "fp16", ["TEST.AMP_DTYPE", "float16"]
    else:
        reduced_label, reduced_opts = "bf16", ["TEST.AMP_DTYPE", "bfloat16"]
    out = OrderedDict(
        weights=args.weights,
        config=os.path.relpath(config, ROOT) if config.startswith(ROOT + os.sep) else config,
        datasets=list(base.DATASETS.TEST),
        runs=OrderedDict(),
    )
    for label, opts in (("fp32", ["TEST.AMP", False]), (reduced_label, ["TEST.AMP", True, *reduced_opts])):
        c = base.clone()
        c.merge_from_list(opts)
        c.freeze()
        options = make_inference_options(c)
        print(f"accuracy: evaluating {args.weights} on {', '.join(c.DATASETS.TEST)} in {label} ...", file=sys.stderr, flush=True)
        model = load_model_for_test(c)
        start = time.perf_counter()
        results = run_test(c, model, False)
        seconds = time.perf_counter() - start
        per_dataset = OrderedDict()
        for name, res in zip(c.DATASETS.TEST, results):
            if not (isinstance(res, tuple) and hasattr(res[0], "results")):
                raise RuntimeError(f"accuracy: {name} is not a COCO-format dataset (no COCO AP)")
            per_dataset[name] = OrderedDict((k, res[0].results["bbox"][k]) for k in COCO_AP_KEYS)
        out["runs"][label] = OrderedDict(
            test_amp=label != "fp32",
            autocast=str(options.amp_dtype).replace("torch.", "") if options.amp_dtype else None,
            channels_last=options.channels_last,
            fuse_bn=options.fuse_bn,
            emulated=label == "bf16" and args.device == "cpu" and not fcos_env.cpu_has_fast_bf16(),
            seconds=seconds,
            metrics=per_dataset,
        )
    first = out["datasets"][0]
    ap32 = out["runs"]["fp32"]["metrics"][first]["AP"]
    ap_red = out["runs"][reduced_label]["metrics"][first]["AP"]
    out.update(
        reduced_precision=reduced_label,
        ap_difference_points=100.0 * (ap_red - ap32),
        goal_points=ACCURACY_GOAL_POINTS,
        goal_met=bool(abs(100.0 * (ap_red - ap32)) <= ACCURACY_GOAL_POINTS),
    )
    return out
