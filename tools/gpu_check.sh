#!/usr/bin/env bash
# The GPU checks of this project in one call of a machine with an NVIDIA GPU that has its own
# python3 with torch, torchvision, pytest, OpenCV and matplotlib but no network (the `device`
# tool's machines). Two steps:
#
#   here, with the package registry:  bash tools/gpu_check.sh prepare
#       downloads the wheels such an image lacks (yacs, pycocotools for Python 3.12) into .whl/
#       (git-ignored), with a copy of ../shared/spec (the tests read it; only the checkout travels);
#   there:                             bash tools/gpu_check.sh run      (carry .whl)
#       installs those wheels into a temporary folder, builds fcos_core._C with the CUDA kernels
#       for the GPU's own architecture, runs the CUDA tests (the ops' CPU-vs-CUDA and gradcheck
#       tests, the layers and modeling tests), then tools/benchmark.py --device cuda: inference
#       (fp32 and float16 autocast, ours vs torchvision FCOS / RetinaNet / Faster R-CNN, 800x1333)
#       and training (batch 2, step time and peak memory). Everything lands in $OUT (default
#       ./gpu_out): gpu.txt, build.txt, tests.txt, inference.{md,json}, train.{md,json}.
#
# Each stage has its own time limit so that one stuck stage still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

case "${1:-run}" in
prepare)
  mkdir -p .whl
  "$PY" -m pip download --quiet --dest .whl --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    pycocotools yacs
  # the checkpoint-layout facts some tests read from ../shared/spec, which does not travel
  if [ -d ../shared/spec ]; then chmod -R u+w .whl/spec 2>/dev/null; rm -rf .whl/spec; cp -r --no-preserve=mode ../shared/spec .whl/spec; fi
  ls -l .whl
  ;;
run)
  OUT=${OUT:-$PWD/gpu_out}
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1
  SITE=$(mktemp -d)
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if [ ! -d ../shared/spec ] && [ -d .whl/spec ]; then mkdir -p ../shared && cp -r .whl/spec ../shared/spec; fi
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  } 2>&1 | tee "$OUT/gpu.txt"
  ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  echo "==> building fcos_core._C with CUDA kernels for sm_${ARCH/./}"
  START=$(date +%s)
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=$(nproc) timeout 300 "$PY" setup.py build_ext --inplace >"$OUT/build.txt" 2>&1
  echo "build rc=$? in $(( $(date +%s) - START )) s" | tee -a "$OUT/build.txt"
  "$PY" -c "from fcos_core.layers import _extension as e; print('CUDA kernels:', {o: e.has_kernel(o, 'cuda') for o in ('nms', 'ml_nms', 'sigmoid_focal_loss_forward')})" 2>&1 | tee -a "$OUT/build.txt"
  echo "==> tests (layers, modeling, inference options)"
  timeout 300 "$PY" -m pytest -q -p no:cacheprovider -rs tests/layers tests/modeling tests/engine/test_inference_options.py \
    >"$OUT/tests.txt" 2>&1
  echo "tests rc=$?"; tail -n 3 "$OUT/tests.txt"
  echo "==> benchmark: inference"
  timeout 300 "$PY" tools/benchmark.py --device cuda --only inference --runs 20 --warmup 3 \
    --json "$OUT/inference.json" --markdown "$OUT/inference.md" 2>&1 | tail -n 16
  echo "==> benchmark: training"
  timeout 300 "$PY" tools/benchmark.py --device cuda --only train --runs 10 --warmup 2 \
    --json "$OUT/train.json" --markdown "$OUT/train.md" 2>&1 | tail -n 8
  ;;
*)
  echo "usage: bash tools/gpu_check.sh [prepare|run]" >&2
  exit 2
  ;;
esac
