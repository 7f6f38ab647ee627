"""fcos_core.engine.slurm: Slurm host lists, and the placement of a process read from torchrun's or
Slurm's variables (the multi-process runs themselves are in test_multinode.py)."""
import os
import stat

import pytest

from fcos_core.engine.launch import default_argument_parser
from fcos_core.engine.slurm import (
    DEFAULT_MASTER_PORT, Placement, expand_nodelist, export_slurm_placement, first_host, launcher_local_rank,
    launcher_placement,
)


@pytest.mark.parametrize("nodelist, hosts", [
    ("node01", ["node01"]),
    ("a,b", ["a", "b"]),
    ("node[01-03]", ["node01", "node02", "node03"]),
    ("gpu[8-11],cpu5", ["gpu8", "gpu9", "gpu10", "gpu11", "cpu5"]),
    ("node[001,007-008],login", ["node001", "node007", "node008", "login"]),
    ("rack[1-2]-n[1,3]", ["rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"]),
    ("127.0.0.[1-2]", ["127.0.0.1", "127.0.0.2"]),
    ("nid[09-10].cluster", ["nid09.cluster", "nid10.cluster"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["node[01-03", "node]01[", "node[a-b]", "node[05-02]", "n[[1]]", ""])
def test_expand_nodelist_names_a_list_it_cannot_read(bad):
    with pytest.raises(ValueError, match="Slurm host list"):
        expand_nodelist(bad)


def test_first_host_asks_scontrol_when_it_is_there(tmp_path, monkeypatch):
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] || exit 1\necho from-scontrol-$3\necho other\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    assert first_host("node[3-4]") == "from-scontrol-node[3-4]"
    fake.write_text("#!/bin/sh\nexit 2\n")  # scontrol that fails: the parser answers
    assert first_host("node[3-4]") == "node3"
    assert first_host("node[3-4]", scontrol="no-such-scontrol") == "node3"


def _slurm(procid, ntasks, localid, nodelist="node[07-08]", **extra):
    env = {"SLURM_PROCID": str(procid), "SLURM_NTASKS": str(ntasks), "SLURM_LOCALID": str(localid),
           "SLURM_NODELIST": nodelist, "SLURM_STEP_ID": "0"}
    env.update(extra)
    return env


def test_torchrun_variables_win_and_local_rank_is_per_machine():
    # two machines of one process each: the second has rank 1 but local rank 0 (its own GPU 0)
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h0", "MASTER_PORT": "1234",
           **_slurm(5, 8, 3)}
    assert launcher_placement(env) == Placement(1, 2, 0, "h0", 1234, "torchrun")
    assert export_slurm_placement(env).launcher == "torchrun" and env["RANK"] == "1"  # untouched


def test_slurm_variables_become_torchs(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    env = _slurm(5, 8, 1)
    assert launcher_placement(env) == Placement(5, 8, 1, "node07", DEFAULT_MASTER_PORT, "slurm")
    export_slurm_placement(env)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")} == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node07", "MASTER_PORT": "29500"}
    # MASTER_PORT and MASTER_ADDR given by the user are kept; the step's own host list wins over the job's
    env = _slurm(0, 2, 0, MASTER_PORT="4321", SLURM_STEP_NODELIST="gpu[2-3]")
    assert launcher_placement(env)[3:5] == ("gpu2", 4321)
    assert launcher_placement(_slurm(0, 2, 0, MASTER_ADDR="10.0.0.9")).master_addr == "10.0.0.9"


@pytest.mark.parametrize("env, local_rank", [
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, 0),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "SLURM_PROCID": "3", "SLURM_STEP_ID": "0",
      "SLURM_LOCALID": "3"}, 0),
    ({"SLURM_PROCID": "3", "SLURM_STEP_ID": "0", "SLURM_LOCALID": "3"}, 3),
    ({"SLURM_PROCID": "3", "SLURM_LOCALID": "3"}, 0),  # not a step
    ({"LOCAL_RANK": "2"}, 2),
    ({}, 0),
])
def test_launcher_local_rank(env, local_rank):
    assert launcher_local_rank(env) == local_rank


def test_a_batch_script_without_srun_is_one_process():
    """sbatch's script has SLURM_PROCID 0 and SLURM_NTASKS N but no step: no group to wait for."""
    env = _slurm(0, 8, 0)
    del env["SLURM_STEP_ID"]
    assert launcher_placement(env) == Placement(0, 1, 0, None, None, "none")
    assert export_slurm_placement(env).world_size == 1 and "RANK" not in env
    assert launcher_placement({}) == Placement(0, 1, 0, None, None, "none")


def test_bad_variables_are_named(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ValueError, match="SLURM_PROCID='x'"):
        launcher_placement(_slurm("x", 2, 0))
    env = _slurm(0, 2, 0)
    del env["SLURM_NTASKS"]
    with pytest.raises(ValueError, match="SLURM_NTASKS"):
        launcher_placement(env)
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        launcher_placement({"RANK": "0", "WORLD_SIZE": "two"})


def test_the_argument_parser_takes_the_local_rank_from_slurm(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in _slurm(3, 4, 3).items():
        monkeypatch.setenv(key, value)
    assert default_argument_parser("t").parse_args([]).local_rank == 3
    monkeypatch.setenv("SLURM_NODELIST", "node[")  # the parser needs no host: a bad list fails later
    assert default_argument_parser("t").parse_args([]).local_rank == 3
    assert default_argument_parser("t").parse_args(["--local-rank", "1"]).local_rank == 1
