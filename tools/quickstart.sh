#!/usr/bin/env bash
# One command from a fresh clone: create .venv at the repository root, install torch,
# the package and its compiled ops, then run the main job.
#
#   bash tools/quickstart.sh
#
# Environment: PYTHON (default python3), FORCE_CUDA=1 to build the CUDA kernels on a
# machine without a GPU (see INSTALL.md), FCOS_SKIP_MAIN_JOB=1 to stop after installing.
set -euo pipefail
START=$(date +%s)
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating $ROOT/.venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
PY=$ROOT/.venv/bin/python
# pip prints one warning per missing local mirror folder on some machines: keep the log readable.
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location 'file:" || true; }

step "installing $TORCH_SPEC"
pip_install $TORCH_SPEC
"$PY" -c "import torch, torchvision" || { echo "torch/torchvision failed to import; see INSTALL.md" >&2; exit 1; }

step "building fcos_core and its C++ ops (pip install --no-build-isolation -e .)"
pip_install --no-build-isolation -e ".[dev]"

step "checking the installed package"
"$PY" -m fcos_core.utils.collect_env --check

if [ "${FCOS_SKIP_MAIN_JOB:-0}" = "1" ]; then
  exit 0
fi
step "main job: train a small FCOS on the embedded shapes dataset, evaluate it, draw the validation images"
OUT=${FCOS_QUICKSTART_OUT:-output/quickstart}
DATA=${FCOS_DATA_DIR:-datasets}
T0=$(date +%s)
# Writes the dataset on first use, trains (resuming if $OUT holds a checkpoint), then evaluates
# on shapes_val: the AP table is printed and saved under $OUT/inference/shapes_val/.
# Two processes of one thread each (DDP over Gloo; SOLVER.IMS_PER_BATCH is the global batch) keep
# two cores busier than one process of two threads: fewer waits at the end of each small op.
# FCOS_QUICKSTART_PROCS=1 trains in one process instead (same global batch, same recipe).
NPROC=${FCOS_QUICKSTART_PROCS:-2}
# The recipe trains under bfloat16 autocast (SOLVER.AMP True), which is fast only on CPUs with
# AVX-512 BF16 or AMX. Elsewhere train_net falls back to float32, about 1.3x slower per step; to stay
# within 15 minutes the quickstart then trains at 256 px instead of 320 (same 1700 steps, ~0.35 s
# each): at 320 px it could afford only 1100 steps, which measured AP 0.275 in float32, against
# 0.368 for 256 px x 1700 steps in float32 (docs/quickstart_recipe.md: e15, e16).
# FCOS_QUICKSTART_FP32_SIZE changes the size.
EXTRA=()
if ! "$PY" -c "import sys; from fcos_core.utils.env import cpu_has_fast_bf16; sys.exit(not cpu_has_fast_bf16())"; then
  FP32_SIZE=${FCOS_QUICKSTART_FP32_SIZE:-256}
  echo "this CPU has no AVX-512 BF16 or AMX: training in float32 at ${FP32_SIZE} px instead of the config's size"
  EXTRA=(INPUT.MIN_SIZE_TRAIN "($FP32_SIZE,)" INPUT.MAX_SIZE_TRAIN $(( FP32_SIZE * 7 / 4 )))
fi
CORES=$(nproc 2>/dev/null || echo 2)
if [ "$NPROC" -gt 1 ]; then
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( CORES / NPROC > 0 ? CORES / NPROC : 1 ))} \
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
    tools/train_net.py --config-file configs/quickstart/fcos_shapes.yaml OUTPUT_DIR "$OUT" ${EXTRA[@]+"${EXTRA[@]}"}
else
  "$PY" tools/train_net.py --config-file configs/quickstart/fcos_shapes.yaml OUTPUT_DIR "$OUT" ${EXTRA[@]+"${EXTRA[@]}"}
fi
mkdir -p "$OUT/val_pictures"
mapfile -t PICS < <(ls "$DATA"/shapes/val/images/*.png | head -n 12)
# the class names come from the checkpoint (train_net stores the training set's in every checkpoint)
"$PY" demo/fcos_demo.py --config-file configs/quickstart/fcos_shapes.yaml --weights "$OUT/model_final.pth" \
  --min-image-size 0 --thresholds-file "$OUT/inference/shapes_val/thresholds.json" \
  --output "$OUT/val_pictures" --no-window "${PICS[@]}"
# one small picture of the run (four validation pictures over the loss curves): the README's
OVERVIEW=()
for p in "${PICS[@]:0:4}"; do OVERVIEW+=("$OUT/val_pictures/$(basename "$p")"); done
"$PY" -c 'import sys; from fcos_core.utils.visualizer import overview_picture as o; print(o(sys.argv[3:], sys.argv[1], sys.argv[2]))' \
  "$OUT/loss_curves.png" "$OUT/overview.png" "${OVERVIEW[@]}"
echo
END=$(date +%s)
echo "main job done in $(( END - T0 )) s (quickstart in all, install included: $(( END - START )) s); in $OUT:"
echo "  model_final.pth, loss_curves.png, metrics.json, log.txt, inference/shapes_val/ (AP), val_pictures/, overview.png"
