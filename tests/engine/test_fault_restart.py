"""Faults at scale: under ``torchrun --max-restarts 1`` a rank killed with SIGKILL mid-training makes
torchrun restart the group, which resumes from last_checkpoint and ends with the weights, optimizer
state and losses of an uninterrupted run, bit for bit on the CPU; with SOLVER.CHECKPOINT_KEEP 1 only
the newest periodic checkpoint is left, and the one the restart resumed from was still there.

Rank 1 (which saves nothing) kills itself after the checkpoint of iteration 4 of 8 (entry point
train_net_killed_once.py); rank 0 is then stuck in the next all-reduce until torchrun stops it. The
restarted group works only because launch.restarted_group_store gives it keys of its own in torchrun's
shared store (the last test here).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_distributed import CONFIG, LOSSES, MODEL

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRAIN = MODEL + [
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "DATALOADER.ASPECT_RATIO_GROUPING", "False",
    "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "0.5", "SOLVER.OPTIMIZER", "SGD", "SOLVER.BASE_LR", "0.01",
    "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "8", "SOLVER.WARMUP_ITERS", "2", "SOLVER.LOG_PERIOD", "1",
    "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.CHECKPOINT_KEEP", "1",
]
TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _torchrun(entry, out, env, log):
    cmd = ["nice", "-n", "19", sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "1", "--monitor-interval", "0.2", str(entry), *CONFIG, "--skip-test", *TRAIN,
           "OUTPUT_DIR", str(out)]
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=str(ROOT), env=env, stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = Path(log).read_text()
    assert proc.returncode == 0, text[-5000:]
    return text


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The runs' folder and environment (shared data; which rank dies, after which checkpoint)."""
    tmp = tmp_path_factory.mktemp("fault")
    env = {k: v for k, v in os.environ.items() if k not in TORCH_VARS and not k.startswith("SLURM_")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", FCOS_DATA_DIR=str(tmp / "data"),
               FCOS_SHAPES_NUM_IMAGES="6",  # 8 iterations of 4 images: the kill falls mid-epoch
               FCOS_TEST_KILL_AFTER="model_0000004", FCOS_TEST_KILL_RANK="1",
               FCOS_TEST_KILL_MARKER=str(tmp / "killed.marker"))
    return tmp, env


@pytest.fixture(scope="module")
def uninterrupted(env):
    tmp, variables = env
    _torchrun(ROOT / "tools" / "train_net.py", tmp / "uninterrupted", variables, tmp / "uninterrupted.log")
    return tmp / "uninterrupted"


@pytest.fixture(scope="module")
def killed(env):
    """(OUTPUT_DIR, torchrun's output, the marker file the killed rank wrote)."""
    tmp, variables = env
    log = _torchrun(HERE / "train_net_killed_once.py", tmp / "killed", variables, tmp / "killed.log")
    return tmp / "killed", log, tmp / "killed.marker"


def _by_iteration(out):
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return [(r["iteration"], {k: r["latest"][k] for k in LOSSES}) for r in records]


def test_the_group_is_restarted_and_resumes_from_the_last_checkpoint(killed):
    killed, log, marker = killed
    assert marker.read_text().startswith("rank 1 pid ")
    # torchrun saw the group fail (rank 1 by SIGKILL, exit code -9, or rank 0 first when its all-reduce
    # with the dead rank raised before torchrun's next look) and started it again
    assert "failed (exitcode: -9) local_rank: 1" in log or "failed (exitcode: 1) local_rank: 0" in log
    assert log.count("Training in 2 process(es)") == 2
    assert f"Resuming from {killed / 'model_0000004.pth'}" in log and "from iteration 4" in log
    # the first attempt logged iterations 1-4, the restart 5-8: each once, in order
    assert [it for it, _ in _by_iteration(killed)] == list(range(1, 9))


def test_the_restarted_run_ends_with_the_uninterrupted_weights_bit_for_bit(uninterrupted, killed):
    whole, killed = uninterrupted, killed[0]
    assert _by_iteration(killed) == _by_iteration(whole)  # same data, flips and losses, exactly
    expected = torch.load(whole / "model_final.pth", weights_only=True)
    got = torch.load(killed / "model_final.pth", weights_only=True)
    assert got["iteration"] == expected["iteration"] == 8
    assert got["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():
        assert torch.equal(got["model"][key], value), key
    for state, value in expected["optimizer"]["state"].items():  # SGD momentum buffers
        for name, tensor in value.items():
            assert torch.equal(got["optimizer"]["state"][state][name], tensor), (state, name)
    assert got["scheduler"] == expected["scheduler"]


def test_checkpoint_keep_leaves_the_newest_periodic_checkpoint(uninterrupted, killed):
    whole, killed = uninterrupted, killed[0]
    for out in (whole, killed):
        assert sorted(p.name for p in out.glob("*.pth")) == ["model_0000006.pth", "model_final.pth"]
        assert (out / "last_checkpoint").read_text() == "model_final.pth"


def test_a_restarted_group_gets_keys_of_its_own_in_torchruns_shared_store():
    """torchrun keeps one TCPStore for all attempts (pytorch/pytorch#135712): without a prefix of its own,
    the restarted group above would read the dead processes' Gloo addresses ("Connection refused")."""
    from fcos_core.engine.launch import restarted_group_store

    agent_store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {"TORCHELASTIC_RESTART_COUNT": "1", "TORCHELASTIC_USE_AGENT_STORE": "True", "WORLD_SIZE": "2",
           "LOCAL_WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent_store.port)}
    store = restarted_group_store(env)
    store.set("rank_1", "address of this attempt")
    assert agent_store.get("fcos_restart_1/rank_1") == b"address of this attempt"
    # first attempts, stores of their own (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1), Slurm: env:// as before
    for change in ({"TORCHELASTIC_RESTART_COUNT": "0"}, {"TORCHELASTIC_USE_AGENT_STORE": "False"}):
        assert restarted_group_store(dict(env, **change)) is None
    assert restarted_group_store({"RANK": "0", "WORLD_SIZE": "2"}) is None
    # several machines: their restart counts need not agree; a warning names the setting that works
    with pytest.warns(UserWarning, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        assert restarted_group_store(dict(env, LOCAL_WORLD_SIZE="1")) is None
