"""Build and install fcos_core with its compiled ops (``fcos_core._C``).

CPU kernels are always built. CUDA kernels are added when torch sees a GPU or when
``FORCE_CUDA=1`` is set (useful on a build machine without a GPU). See INSTALL.md.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")


def _guess_cuda_home():
    """Point CUDA_HOME at a real toolkit before torch.utils.cpp_extension reads it.

    torch guesses CUDA_HOME from the directory holding ``nvcc``; a wrapper script in
    /usr/local/bin makes that guess /usr/local, which has no CUDA headers.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    for cand in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(cand, "bin", "nvcc")):
            os.environ["CUDA_HOME"] = cand
            return


_guess_cuda_home()

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _want_cuda():
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    if not (force or torch.cuda.is_available()):
        return False
    if CUDA_HOME is None or shutil.which("nvcc") is None and not os.path.exists(
        os.path.join(CUDA_HOME, "bin", "nvcc")
    ):
        msg = "CUDA kernels requested but nvcc was not found; set CUDA_HOME (see INSTALL.md)"
        if force:
            sys.exit("error: " + msg)
        print("warning: " + msg + "; building the CPU kernels only", file=sys.stderr)
        return False
    if torch.version.cuda is None:
        msg = "this torch is a CPU-only build, so CUDA kernels cannot be linked"
        if force:
            sys.exit("error: FORCE_CUDA=1 but " + msg + " (install a CUDA build of torch)")
        return False
    return True


def _nvidia_wheel_includes():
    """Headers shipped in the nvidia-* pip wheels (cusparse.h, cublas_v2.h ...).

    ATen's CUDA headers include them; a system toolkit installed without the math
    libraries lacks them, while torch's CUDA wheels bring them in site-packages.
    """
    found = []
    for path in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cu12/include"):
            cand = os.path.join(path, sub)
            if os.path.isdir(cand):
                found.append(cand)
        found.extend(sorted(glob.glob(os.path.join(path, "nvidia", "*", "include"))))
    return list(dict.fromkeys(found))


def get_extensions():
    cpu_sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "*", "*_cpu.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(CSRC, "*", "*_cuda.cu")))
    define_macros = []
    # -fopenmp: at::parallel_for is inline and runs on one thread unless compiled with OpenMP
    # (it then shares torch's own OpenMP runtime and thread count).
    extra = {"cxx": ["-O3", "-fopenmp"]}
    include_dirs = [CSRC]
    if _want_cuda():
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # No GPU to read the architecture from: cover Turing to Blackwell, plus PTX.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
        ext_cls = CUDAExtension
        sources = cpu_sources + cuda_sources
        define_macros.append(("WITH_CUDA", None))
        extra["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
        include_dirs += _nvidia_wheel_includes()
    else:
        ext_cls = CppExtension
        sources = cpu_sources
    sources = [os.path.relpath(s, ROOT) for s in sources]
    return [
        ext_cls(
            "fcos_core._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
        )
    ]


setup(
    name="fcos_core",
    version="0.1.0",
    description="FCOS: Fully Convolutional One-Stage Object Detection, on current PyTorch, CPU and CUDA",
    license="BSD-2-Clause",
    packages=find_packages(exclude=("configs", "tests", "tests.*", "tools", "demo")),
    python_requires=">=3.9",
    install_requires=["yacs", "numpy", "tqdm", "matplotlib", "pycocotools", "opencv-python-headless", "ninja"],
    # onnx and onnxruntime: tools/export_onnx.py and its tests (tests/export)
    extras_require={
        "dev": ["pytest", "onnx", "onnxruntime", "openvino", "tensorboard", "faster-coco-eval", "orjson"],
        "eval": ["faster-coco-eval"],  # TEST.COCO_EVAL_BACKEND faster_coco_eval (a faster COCOeval, same numbers)
        "export": ["onnx", "onnxruntime"],
        "json": ["orjson"],  # COCODataset reads COCO-sized jsons 2-3x faster (the standard json module otherwise)
        "openvino": ["onnx", "openvino"],  # TEST.BACKEND openvino: the ONNX export run by OpenVINO on the CPU
        "tensorboard": ["tensorboard"],
    },
    # fcos_core/configs links to configs/: the fcos command finds the model-zoo configs when installed
    package_data={"fcos_core": ["configs/*/*.yaml"]},
    entry_points={"console_scripts": ["fcos = fcos_core.cli:main"]},
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
