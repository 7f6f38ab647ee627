"""Where this process sits in a multi-process run, read from its launcher's environment.

torchrun and ``torch.distributed.launch`` give every process RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT. A process started by Slurm's ``srun`` (``tools/slurm_train.sh``) has
none of them but SLURM_PROCID (rank), SLURM_NTASKS (world size), SLURM_LOCALID (rank on its node,
hence its GPU) and the job's hosts in SLURM_STEP_NODELIST / SLURM_NODELIST (``node[01-04]``), whose
first host runs rank 0 and so the rendezvous. :func:`export_slurm_placement` writes torch's
variables from Slurm's when torch's are absent, as mmengine's ``init_dist('slurm')`` does, so that
``init_process_group(init_method="env://")`` works the same under either launcher.

Slurm's variables are used only inside a job step (SLURM_STEP_ID is set: ``srun``): a batch script
itself also has SLURM_PROCID 0 and SLURM_NTASKS N, and a single ``python`` there must not wait
for N - 1 processes that will never come.
"""
import os
import re
import shutil
import subprocess
from typing import NamedTuple, Optional

DEFAULT_MASTER_PORT = 29500  # torchrun's default; set MASTER_PORT for another


class Placement(NamedTuple):
    """This process in the run: ``rank`` (0 .. world_size - 1, which share of the data it reads),
    ``world_size`` (processes in all), ``local_rank`` (index on its machine: which GPU it drives),
    ``master_addr`` / ``master_port`` (where rank 0 listens; None when not given) and ``launcher``
    ("torchrun" for torchrun / torch.distributed.launch, "slurm", or "none" for a plain process)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: Optional[str]
    master_port: Optional[int]
    launcher: str


def expand_nodelist(nodelist):
    """Host names of a Slurm host list, in order: ``"node[01-03],gpu5"`` -> node01, node02, node03,
    gpu5; ``"rack[1-2]-n[1,3]"`` -> rack1-n1, rack1-n3, rack2-n1, rack2-n3 (zero padding kept).

    Covers ranges and lists in brackets; ``scontrol show hostnames`` (see :func:`first_host`) is the
    authority where Slurm is installed. Raises ValueError naming the list when it cannot be read.
    """
    hosts = []
    for item in _split_top_level(nodelist):
        hosts.extend(_expand_item(item, nodelist))
    if not hosts:
        raise ValueError(f"empty Slurm host list {nodelist!r}")
    return hosts


def _split_top_level(nodelist):
    """The comma-separated items of ``nodelist`` (commas inside brackets do not split)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise ValueError(f"unbalanced brackets in the Slurm host list {nodelist!r}")
        if char == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced brackets in the Slurm host list {nodelist!r}")
    items.append(nodelist[start:])
    return [item.strip() for item in items if item.strip()]


def _expand_item(item, nodelist):
    """One host pattern: the first bracket expanded, the rest of the pattern recursively."""
    match = re.search(r"\[([^\]]*)\]", item)
    if match is None:
        return [item]
    head, tail = item[:match.start()], item[match.end():]
    rests = _expand_item(tail, nodelist)
    return [head + number + rest for number in _expand_ranges(match.group(1), nodelist) for rest in rests]


def _expand_ranges(spec, nodelist):
    """``"01-03,7"`` -> ["01", "02", "03", "7"]: a range keeps the width of its first number."""
    numbers = []
    for part in spec.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()) or (dash and int(high) < int(low)):
            raise ValueError(f"cannot read the range {part!r} of the Slurm host list {nodelist!r}")
        if not dash:
            numbers.append(low)
        else:
            numbers.extend(str(n).zfill(len(low)) for n in range(int(low), int(high) + 1))
    return numbers


def first_host(nodelist, scontrol="scontrol"):
    """The first host of the Slurm host list ``nodelist``: from ``scontrol show hostnames`` when
    ``scontrol`` is on PATH and answers, else from :func:`expand_nodelist`."""
    if shutil.which(scontrol):
        try:
            out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=60, check=True).stdout.split()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out:
            return out[0]
    return expand_nodelist(nodelist)[0]


def launcher_placement(environ=None):
    """The :class:`Placement` of this process from ``environ`` (default ``os.environ``): torchrun's
    variables when RANK and WORLD_SIZE are set, else Slurm's inside an ``srun`` step, else one
    process (local rank from LOCAL_RANK, 0 without it). Raises ValueError naming a variable that
    is not a number, or a Slurm step without SLURM_NTASKS or host list."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        port = env.get("MASTER_PORT")
        return Placement(_int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK", 0),
                         env.get("MASTER_ADDR"), int(port) if port else None, "torchrun")
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        return _slurm_placement(env)
    return Placement(0, 1, _int(env, "LOCAL_RANK", 0), None, None, "none")


def launcher_local_rank(environ=None):
    """The local rank alone (what :func:`launcher_placement` would give), without resolving rank 0's
    host: LOCAL_RANK under torchrun, SLURM_LOCALID in an ``srun`` step, else LOCAL_RANK or 0."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
            return _int(env, "SLURM_LOCALID", 0)
    return _int(env, "LOCAL_RANK", 0)


def _slurm_placement(env):
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if "SLURM_NTASKS" not in env or not nodelist:
        raise ValueError("a Slurm step (SLURM_PROCID and SLURM_STEP_ID are set) without SLURM_NTASKS or "
                         "SLURM_NODELIST: start the processes with srun (tools/slurm_train.sh)")
    addr = env.get("MASTER_ADDR") or first_host(nodelist)
    port = _int(env, "MASTER_PORT", DEFAULT_MASTER_PORT)
    return Placement(_int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"), _int(env, "SLURM_LOCALID", 0),
                     addr, port, "slurm")


def _int(env, key, default=None):
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise ValueError(f"the environment variable {key} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"the environment variable {key}={value!r} is not a whole number") from None


def export_slurm_placement(environ=None):
    """Under Slurm without torchrun: write RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
    into ``environ`` (default ``os.environ``) from Slurm's variables, for ``init_method="env://"``.
    Nothing changes under torchrun or in a plain process. Returns the :class:`Placement`."""
    env = os.environ if environ is None else environ
    placement = launcher_placement(env)
    if placement.launcher == "slurm":
        env.update(RANK=str(placement.rank), WORLD_SIZE=str(placement.world_size),
                   LOCAL_RANK=str(placement.local_rank), MASTER_ADDR=placement.master_addr,
                   MASTER_PORT=str(placement.master_port))
    return placement
