#!/usr/bin/env bash
# Train on a Slurm cluster: one srun task per GPU, each running tools/train_net.py.
#
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [MASTER_PORT=29500] [SRUN_ARGS="--time=2-0"] \
#     tools/slurm_train.sh PARTITION JOB_NAME CONFIG_FILE [KEY VALUE ...]
#
# PARTITION "" runs in the current allocation (salloc / an sbatch script) without -p.
# No torchrun: each task's rank, world size and local rank (its GPU) come from SLURM_PROCID,
# SLURM_NTASKS and SLURM_LOCALID, and rank 0's address from the first host of the step's node
# list (fcos_core/engine/slurm.py). MASTER_PORT must be free on that host: give two jobs that may
# share a node different ports. SOLVER.IMS_PER_BATCH is the global batch (docs/distributed.md).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: [GPUS=N GPUS_PER_NODE=M] $0 PARTITION JOB_NAME CONFIG_FILE [KEY VALUE ...]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
if [ "$GPUS" -lt "$GPUS_PER_NODE" ]; then GPUS_PER_NODE=$GPUS; fi
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
export MASTER_PORT=${MASTER_PORT:-29500}
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."

# SRUN_ARGS is split into words on purpose: several srun options in one variable
# shellcheck disable=SC2086
srun ${PARTITION:+-p "$PARTITION"} --job-name="$JOB_NAME" --gres="gpu:$GPUS_PER_NODE" --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "$PY" -u tools/train_net.py --config-file "$CONFIG" "$@"
