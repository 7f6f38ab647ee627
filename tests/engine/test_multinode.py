"""More than one machine, on localhost: the same tiny training (test_distributed.py's) run as one
node of two processes (``torchrun --nproc-per-node 2``), as two "nodes" of one process each joined by
torchrun's c10d rendezvous, and as two processes given only Slurm's variables (what ``srun`` in
tools/slurm_train.sh gives them; no torchrun) must log the same losses and end with the same weights,
bit for bit: the rank (RANK, or SLURM_PROCID) picks the share of the data, the local rank (0 on both
"nodes") only the device."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from test_distributed import CONFIG, LOSSES, ROOT, TRAIN

TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "TORCHELASTIC_RUN_ID", "GROUP_RANK")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(extra):
    """os.environ without any launcher's variables (a test run under torchrun or Slurm), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in TORCH_VARS and not k.startswith("SLURM_")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return env


def _run_together(commands, envs, logs, timeout=300):
    """Start every command at once (two machines' worth), wait for all; each must exit with 0."""
    procs = []
    for cmd, env, log in zip(commands, envs, logs):
        with open(log, "w") as f:
            procs.append(subprocess.Popen(["nice", "-n", "19", *cmd], cwd=str(ROOT), env=env, stdout=f,
                                          stderr=subprocess.STDOUT))
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text()[-5000:]
    return [log.read_text() for log in logs]


def _train_args(out):
    return [str(ROOT / "tools" / "train_net.py"), *CONFIG, "--skip-test", *TRAIN, "OUTPUT_DIR", str(out)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """OUTPUT_DIRs and outputs of: one node x 2 processes, 2 nodes x 1 process (c10d), 2 Slurm tasks."""
    tmp = tmp_path_factory.mktemp("multinode")
    data = {"FCOS_DATA_DIR": str(tmp / "data"), "FCOS_SHAPES_NUM_IMAGES": "8"}
    result = {}
    one_node = tmp / "one_node"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--standalone",
               *_train_args(one_node)]
    result["one_node"] = (one_node, _run_together([command], [_clean_env(data)], [tmp / "one_node.log"])[0])

    two_nodes, port = tmp / "two_nodes", _free_port()
    commands = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                 "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}",
                 "--rdzv-id", "fcos-two-nodes", *_train_args(two_nodes)] for node in (0, 1)]
    logs = [tmp / f"node{node}.log" for node in (0, 1)]
    result["two_nodes"] = (two_nodes, _run_together(commands, [_clean_env(data)] * 2, logs))

    slurm, port = tmp / "slurm", _free_port()
    # what srun gives each task of `srun --nodes 2 --ntasks-per-node 1`; MASTER_PORT as slurm_train.sh sets it
    envs = [_clean_env(dict(data, SLURM_PROCID=str(task), SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_NODEID=str(task),
                            SLURM_STEP_ID="0", SLURM_NODELIST="127.0.0.[1-2]", MASTER_PORT=str(port)))
            for task in (0, 1)]
    logs = [tmp / f"task{task}.log" for task in (0, 1)]
    result["slurm"] = (slurm, _run_together([[sys.executable, *_train_args(slurm)]] * 2, envs, logs), port)
    return result


def _latest_losses(out):
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return {r["iteration"]: {k: r["latest"][k] for k in LOSSES} for r in records}


def _assert_same_training(out, reference):
    expected = _latest_losses(reference)
    assert sorted(expected) == [1, 2, 3, 4]
    assert _latest_losses(out) == expected  # exactly
    want = torch.load(reference / "model_final.pth", weights_only=True)["model"]
    got = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_two_nodes_of_one_process_train_as_one_node_of_two(runs):
    reference, stdout = runs["one_node"]
    assert "Training in 2 process(es), 2 images each" in stdout
    out, node_logs = runs["two_nodes"]
    # rank 0 (on whichever node the rendezvous made first) logs; local rank is 0 on both machines
    rank0 = [log for log in node_logs if "Training in 2 process(es), 2 images each" in log]
    assert len(rank0) == 1
    assert "Process group: 2 processes over gloo, rank 0, local rank 0" in rank0[0]
    _assert_same_training(out, reference)


def test_two_slurm_tasks_without_torchrun_train_as_one_node_of_two(runs):
    reference, _ = runs["one_node"]
    out, task_logs, port = runs["slurm"]
    # SLURM_PROCID 0 is rank 0; the rendezvous is on the first host of SLURM_NODELIST
    assert "Training in 2 process(es), 2 images each" in task_logs[0]
    assert f"Process group: 2 processes over gloo, rank 0, local rank 0, rendezvous at 127.0.0.1:{port}" in task_logs[0]
    assert "Training in" not in task_logs[1]
    _assert_same_training(out, reference)
