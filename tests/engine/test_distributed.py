"""Multi-process training and testing on the CPU (DDP over Gloo), launched as real processes.

Two processes with SOLVER.IMS_PER_BATCH B (B/2 images each) must log the losses of one process
with batch B: the sampler gives them the same global batches with the same augmentation and the
loss normalises by the positives of all processes. The model uses FrozenBatchNorm and GroupNorm
(no per-process batch statistics), and every image is resized to at most 64 pixels and padded to
64 x 64, so that the padding does not depend on which images share a process. test_net in two
processes must give the detections and AP of one process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ["--config-file", "configs/quickstart/fcos_shapes.yaml"]
MODEL = [
    "MODEL.RESNETS.STEM_FUNC", "StemWithFixedBatchNorm", "MODEL.RESNETS.TRANS_FUNC", "BottleneckWithFixedBatchNorm",
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "1",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "DATALOADER.NUM_WORKERS", "0",
    # float32 whatever the CPU: the quickstart config trains in bfloat16 where the CPU has it, and
    # bfloat16 rounding would hide the 1e-5 agreement this test checks
    "SOLVER.AMP", "False",
]
TRAIN = MODEL + [
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "DATALOADER.ASPECT_RATIO_GROUPING", "False",
    "SOLVER.OPTIMIZER", "SGD", "SOLVER.BASE_LR", "0.01", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "4",
    "SOLVER.WARMUP_ITERS", "2", "SOLVER.LOG_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", "0",
]
LOSSES = ("loss", "loss_cls", "loss_reg", "loss_centerness")


def _run(launcher, script, args, env_extra, timeout=300):
    """``script`` under ``launcher`` (a list: [] for one plain process) with niced single-threaded ranks."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **env_extra)
    cmd = ["nice", "-n", "19", sys.executable, *launcher, str(ROOT / "tools" / script), *args]
    res = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def _torchrun(n):
    return ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]


def _latest_losses(out):
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return {r["iteration"]: {k: r["latest"][k] for k in LOSSES} for r in records}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run in one process and one in two (torchrun), same config: their OUTPUT_DIRs and stdout."""
    tmp = tmp_path_factory.mktemp("distributed")
    env = {"FCOS_DATA_DIR": str(tmp / "data"), "FCOS_SHAPES_NUM_IMAGES": "8"}  # 2 batches of 4 per epoch
    runs = {}
    for n in (1, 2):
        out = tmp / f"train_{n}"
        launcher = [] if n == 1 else _torchrun(n)
        res = _run(launcher, "train_net.py", CONFIG + ["--skip-test"] + TRAIN + ["OUTPUT_DIR", str(out)], env)
        runs[n] = (out, res.stdout)
    return tmp, runs


def test_two_processes_log_the_losses_of_one_process_with_the_same_global_batch(trained):
    _, runs = trained
    assert "Training in 1 process(es), 4 images each" in runs[1][1]
    assert "Training in 2 process(es), 2 images each" in runs[2][1]
    one, two = _latest_losses(runs[1][0]), _latest_losses(runs[2][0])
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]  # two epochs of the 8 images
    for iteration in one:
        for key in LOSSES:
            assert two[iteration][key] == pytest.approx(one[iteration][key], abs=1e-5, rel=0), (iteration, key)
    # the weights moved, and moved alike
    final = [torch.load(out / "model_final.pth", weights_only=True)["model"] for out, _ in (runs[1], runs[2])]
    init_losses = one[1]["loss"]
    assert any(abs(one[i]["loss"] - init_losses) > 1e-3 for i in (2, 3, 4))
    for key, value in final[0].items():
        assert torch.allclose(final[1][key], value, atol=1e-5, rtol=0), key


def _detections(folder):
    """bbox.json as sorted (image, category, rounded score, rounded box) tuples."""
    dets = json.loads((folder / "bbox.json").read_text())
    return sorted((d["image_id"], d["category_id"], round(d["score"], 4), tuple(round(v, 2) for v in d["bbox"]))
                  for d in dets)


def test_test_net_in_two_processes_gives_the_ap_of_one(trained):
    tmp, runs = trained
    # Regression outputs that make every location predict a box of a few strides, so that some
    # detections hit the ground truth and the AP is not 0 after four iterations of training.
    state = torch.load(runs[1][0] / "model_final.pth", weights_only=True)["model"]
    state["rpn.head.bbox_pred.bias"].fill_(1.5)
    weight = tmp / "boxes_everywhere.pth"
    torch.save({"model": state}, weight)
    # 5 validation images: the second process's share is padded with a repeat of the first image
    env = {"FCOS_DATA_DIR": str(tmp / "val_data"), "FCOS_SHAPES_NUM_IMAGES": "5"}
    args = CONFIG + MODEL + ["TEST.IMS_PER_BATCH", "4", "MODEL.FCOS.INFERENCE_TH", "0.0", "MODEL.WEIGHT", str(weight)]
    folders = {}
    for n, launcher in ((1, []), (2, ["-m", "torch.distributed.launch", "--standalone", "--nproc_per_node=2"])):
        out = tmp / f"test_{n}"
        _run(launcher, "test_net.py", args + ["OUTPUT_DIR", str(out)], env)
        folders[n] = out / "inference" / "shapes_val"
    one = json.loads((folders[1] / "coco_results.json").read_text())["bbox"]
    two = json.loads((folders[2] / "coco_results.json").read_text())["bbox"]
    assert one["AP"] > 0 and one["AP50"] > 0
    assert two == pytest.approx(one, abs=1e-6)
    dets_one, dets_two = _detections(folders[1]), _detections(folders[2])
    assert {d[0] for d in dets_one} == {1, 2, 3, 4, 5}
    assert dets_two == dets_one


def test_train_net_reads_the_local_rank_in_every_spelling(monkeypatch):
    """tools/train_net.py and tools/test_net.py parse with the engine's default_argument_parser."""
    from fcos_core.engine.launch import default_argument_parser

    parser = default_argument_parser("t", skip_test=True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert parser.parse_args(["--local_rank", "1"]).local_rank == 1
    assert default_argument_parser("t").parse_args(["--local-rank=3", "SOLVER.MAX_ITER", "2"]).local_rank == 3
    monkeypatch.setenv("LOCAL_RANK", "2")
    args = default_argument_parser("t", skip_test=True).parse_args(["--skip-test", "SOLVER.MAX_ITER", "2"])
    assert args.skip_test
    assert args.local_rank == 2 and args.opts == ["SOLVER.MAX_ITER", "2"]
