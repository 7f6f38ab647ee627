"""A training killed with SIGKILL right after a checkpoint and started again with the same command
ends with the weights of an uninterrupted run: the restart resumes the iteration, the learning-rate
schedule, the optimizer, the random state and the data stream (order and random augmentation)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fcos_core.engine.resume import restore_resume_state
from fcos_core.engine.trainer import TrainOptions, do_train

ROOT = Path(__file__).resolve().parents[2]
# The quickstart config as it is (trainable BatchNorm, AdamW, cosine schedule, gradient clipping,
# a loader worker, aspect-ratio grouping) on tiny images with every random augmentation on.
ARGS = [
    "--config-file", "configs/quickstart/fcos_shapes.yaml", "--skip-test",
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "1",
    "INPUT.MIN_SIZE_TRAIN", "(48, 56, 64)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "0.5",
    "INPUT.BRIGHTNESS", "0.2", "INPUT.CONTRAST", "0.2",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "9", "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.LOG_PERIOD", "1", "DATALOADER.NUM_WORKERS", "1",
]
KILL_AFTER = "model_0000002.pth"  # mid-epoch: 6 images give 3 or more batches of 2 per epoch
LOSSES = ("loss", "loss_cls", "loss_reg", "loss_centerness")


def _command(out):
    return ["nice", "-n", "19", sys.executable, str(ROOT / "tools" / "train_net.py"), *ARGS, "OUTPUT_DIR", str(out)]


def _env(tmp):
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", FCOS_DATA_DIR=str(tmp / "data"),
                FCOS_SHAPES_NUM_IMAGES="6")


def _train(out, env):
    res = subprocess.run(_command(out), cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def _train_until_checkpoint_then_kill(out, env, log):
    """Start training, SIGKILL it (and its loader worker) as soon as KILL_AFTER is the last checkpoint."""
    with open(log, "w") as f:
        proc = subprocess.Popen(_command(out), cwd=str(ROOT), env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            pointer = out / "last_checkpoint"
            if (out / KILL_AFTER).exists() and pointer.exists() and pointer.read_text() == KILL_AFTER:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and time.time() >= deadline:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, Path(log).read_text()[-3000:]


def _by_iteration(out):
    """The losses of each iteration of metrics.json (the last record of an iteration logged twice)."""
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return {r["iteration"]: {k: r["latest"][k] for k in LOSSES} for r in records}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    env = _env(tmp)
    whole = tmp / "uninterrupted"
    _train(whole, env)
    killed = tmp / "killed"
    _train_until_checkpoint_then_kill(killed, env, tmp / "killed.log")
    was_at = (killed / "last_checkpoint").read_text()
    assert not (killed / "model_final.pth").exists()
    restarted_stdout = _train(killed, env)
    return whole, killed, was_at, restarted_stdout


def test_restart_after_sigkill_ends_with_the_weights_of_an_uninterrupted_run(runs):
    whole, killed, was_at, stdout = runs
    assert "Loading checkpoint from {}".format(killed / was_at) in stdout
    assert "from iteration {}".format(int(was_at[len("model_"):-len(".pth")])) in stdout
    expected = torch.load(whole / "model_final.pth", weights_only=True)
    got = torch.load(killed / "model_final.pth", weights_only=True)
    assert got["iteration"] == expected["iteration"] == 9
    assert got["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():  # weights and BatchNorm statistics
        assert torch.equal(got["model"][key], value), key
    for state, value in expected["optimizer"]["state"].items():  # AdamW moments and step
        for name, tensor in value.items():
            assert torch.equal(got["optimizer"]["state"][state][name], tensor), (state, name)
    assert got["scheduler"] == expected["scheduler"]


def test_restart_sees_the_data_and_losses_of_an_uninterrupted_run(runs):
    whole, killed, _, _ = runs
    expected, got = _by_iteration(whole), _by_iteration(killed)
    assert sorted(got) == sorted(expected) == list(range(1, 10))
    assert got == expected  # exactly: same batches, same flips, scales and colours, same weights
    assert len({round(v["loss"], 6) for v in expected.values()}) > 1


def test_checkpoints_hold_the_grad_scaler_state():
    """train_net restores "scaler" on resume (float16 on CUDA); do_train must save it."""
    model = torch.nn.Linear(2, 1)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, images, targets):
            return {"loss_cls": self.lin(images.tensors).sum()}

    class Images:
        tensors = torch.ones(1, 2)

        def to(self, device):
            return self

    class Saver:
        saved = []

        def save(self, name, **kwargs):
            self.saved.append((name, kwargs))

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    do_train(Model(), [(Images(), [], ())] * 3, opt, sched, Saver(), {"iteration": 0},
             TrainOptions(max_iter=3, checkpoint_period=2), grad_scaler=scaler)
    names = [name for name, _ in Saver.saved]
    assert names == ["model_0000002", "model_final"]
    for _, kwargs in Saver.saved:
        assert kwargs["scaler"]["scale"] == 64.0 and "rng_state" in kwargs
    assert Saver.saved[-1][1]["iteration"] == 3
    # what train() reads back: the iteration and the scaler's state, from the same module's pair
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0)
    assert restore_resume_state(Saver.saved[-1][1], fresh) == {"iteration": 3}
    assert fresh.state_dict()["scale"] == 64.0


def test_restore_resume_state_of_a_checkpoint_without_it_starts_at_zero():
    """The original's checkpoints (and MODEL.WEIGHT files) hold no iteration, random or scaler state."""
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    assert restore_resume_state({}, scaler) == {"iteration": 0}
    assert scaler.state_dict()["scale"] == 8.0
