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
def tmp(tmp_path_factory):
    """A folder for the module's runs, and the environment that makes their (shared) data."""
    folder = tmp_path_factory.mktemp("multinode")
    return folder, {"FCOS_DATA_DIR": str(folder / "data"), "FCOS_SHAPES_NUM_IMAGES": "8"}


@pytest.fixture(scope="module")
def one_node(tmp):
    """The reference: one machine of two processes. (OUTPUT_DIR, rank 0's output)."""
    folder, data = tmp
    out = folder / "one_node"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--standalone",
               *_train_args(out)]
    return out, _run_together([command], [_clean_env(data)], [folder / "one_node.log"])[0]


@pytest.fixture(scope="module")
def two_nodes(tmp):
    """Two torchrun "machines" of one process each, joined by the c10d rendezvous. (OUTPUT_DIR, outputs)."""
    folder, data = tmp
    out, port = folder / "two_nodes", _free_port()
    commands = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                 "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}",
                 "--rdzv-id", "fcos-two-nodes", *_train_args(out)] for node in (0, 1)]
    logs = [folder / f"node{node}.log" for node in (0, 1)]
    return out, _run_together(commands, [_clean_env(data)] * 2, logs)


@pytest.fixture(scope="module")
def slurm(tmp):
    """Two processes with only Slurm's variables, no torchrun. (OUTPUT_DIR, outputs, MASTER_PORT)."""
    folder, data = tmp
    out, port = folder / "slurm", _free_port()
    # what srun gives each task of `srun --nodes 2 --ntasks-per-node 1`; MASTER_PORT as slurm_train.sh sets it
    envs = [_clean_env(dict(data, SLURM_PROCID=str(task), SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_NODEID=str(task),
                            SLURM_STEP_ID="0", SLURM_NODELIST="127.0.0.[1-2]", MASTER_PORT=str(port)))
            for task in (0, 1)]
    logs = [folder / f"task{task}.log" for task in (0, 1)]
    return out, _run_together([[sys.executable, *_train_args(out)]] * 2, envs, logs), port


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


def test_two_nodes_of_one_process_train_as_one_node_of_two(one_node, two_nodes):
    reference, stdout = one_node
    assert "Training in 2 process(es), 2 images each" in stdout
    out, node_logs = two_nodes
    # rank 0 (on whichever node the rendezvous made first) logs; local rank is 0 on both machines
    rank0 = [log for log in node_logs if "Training in 2 process(es), 2 images each" in log]
    assert len(rank0) == 1
    assert "Process group: 2 processes over gloo, rank 0, local rank 0" in rank0[0]
    _assert_same_training(out, reference)


def test_two_slurm_tasks_without_torchrun_train_as_one_node_of_two(one_node, slurm):
    reference, _ = one_node
    out, task_logs, port = slurm
    # SLURM_PROCID 0 is rank 0; the rendezvous is on the first host of SLURM_NODELIST
    assert "Training in 2 process(es), 2 images each" in task_logs[0]
    assert f"Process group: 2 processes over gloo, rank 0, local rank 0, rendezvous at 127.0.0.1:{port}" in task_logs[0]
    assert "Training in" not in task_logs[1]
    _assert_same_training(out, reference)
