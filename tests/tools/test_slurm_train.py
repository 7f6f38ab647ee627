"""tools/slurm_train.sh: the srun command it builds, seen through a fake srun on PATH (the training
its tasks run together is tests/engine/test_multinode.py's Slurm case)."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "slurm_train.sh"


def _run(tmp_path, args, **env_extra):
    """Run the script with a fake srun that writes its arguments (one a line) and MASTER_PORT."""
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir(exist_ok=True)
    record = tmp_path / "srun_args.txt"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\necho "MASTER_PORT=$MASTER_PORT" >> {record}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "GPUS_PER_NODE", "SRUN_ARGS", "MASTER_PORT")}
    env.update(PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", **env_extra)
    proc = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, cwd=str(tmp_path))
    return proc, record.read_text().splitlines() if record.exists() else None


def test_syntax_and_usage(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    proc, srun = _run(tmp_path, ["gpu", "job"])
    assert proc.returncode == 2 and "usage:" in proc.stderr and srun is None


def test_one_task_per_gpu_running_train_net(tmp_path):
    proc, srun = _run(tmp_path, ["gpu", "fcos", "configs/fcos/fcos_R_50_FPN_1x.yaml", "SOLVER.IMS_PER_BATCH", "32"],
                      GPUS="16", SRUN_ARGS="--time=1:00:00 --exclusive", MASTER_PORT="29611")
    assert proc.returncode == 0, proc.stderr
    python = srun.index("python")
    assert srun[:python] == ["-p", "gpu", "--job-name=fcos", "--gres=gpu:8", "--ntasks=16", "--ntasks-per-node=8",
                             "--cpus-per-task=5", "--kill-on-bad-exit=1", "--time=1:00:00", "--exclusive"]
    assert srun[python:] == ["python", "-u", "tools/train_net.py", "--config-file",
                             "configs/fcos/fcos_R_50_FPN_1x.yaml", "SOLVER.IMS_PER_BATCH", "32", "MASTER_PORT=29611"]


@pytest.mark.parametrize("gpus, per_node", [("2", "2"), ("1", "1")])
def test_fewer_gpus_than_a_node_and_the_current_allocation(tmp_path, gpus, per_node):
    proc, srun = _run(tmp_path, ["", "fcos", "c.yaml"], GPUS=gpus)
    assert proc.returncode == 0, proc.stderr
    assert srun[0] == "--job-name=fcos"  # PARTITION "": no -p
    assert f"--ntasks={gpus}" in srun and f"--ntasks-per-node={per_node}" in srun and f"--gres=gpu:{per_node}" in srun
    assert srun[-1] == "MASTER_PORT=29500"
