#!/usr/bin/env bash
# One command from a fresh clone: create .venv at the repository root, install torch,
# the package and its compiled ops, then run the main job.
#
#   bash tools/quickstart.sh
#
# Environment: PYTHON (default python3), FORCE_CUDA=1 to build the CUDA kernels on a
# machine without a GPU (see INSTALL.md), FCOS_SKIP_MAIN_JOB=1 to stop after installing.
set -euo pipefail
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
step "main job"
# Until the training loop lands (issue: training, testing and the demo) the main job is the
# smoke check above. This line becomes: train on the embedded dataset, evaluate, draw.
echo "installed: .venv/bin/python -m pytest -q tests runs the test suite"
