"""Convolution throughput: of this CPU (one convolution timed alone, tools/conv_throughput.py and the
deploy part of tools/benchmark.py) and the convolution FLOPs a detector does for one image.

FLOPs are 2 x multiply-adds (the bias and everything that is not a convolution excluded), so
"throughput" is 2 x multiply-adds per second, in float32, bfloat16 or int8 ("int8 OPS").
"""
import contextlib
import warnings

import torch
import torch.nn.functional as F

from fcos_core.benchmark.timing import median_ms  # the ops benchmark's timing: median after warm-up

# (name, C_in, C_out, kernel, stride, H, W of the input): the convolutions that dominate FCOS-R-50
# at 800 x 1333; the first one is the reference of the deploy table's "conv throughput fraction"
CONVS = [
    ("head tower 3x3 256->256 on P3", 256, 256, 3, 1, 100, 168),
    ("res3 3x3 128->128", 128, 128, 3, 1, 100, 168),
    ("res2 1x1 256->64", 256, 64, 1, 1, 200, 336),
]
DTYPES = ("fp32", "bf16", "int8")
INT8_ENGINE = "onednn"  # torch's quantized engine for int8: oneDNN (VNNI / AMX int8), which OpenVINO also uses


def conv_flops(c_in, c_out, k, stride, h, w):
    """2 x multiply-adds of one ``k`` x ``k`` convolution (padding ``k // 2``) of a [1, c_in, h, w] input."""
    return 2.0 * c_out * c_in * k * k * (h // stride) * (w // stride)


@contextlib.contextmanager
def _quantized_engine(name):
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _int8_conv(x, weight, stride, k):
    """A callable running ``weight`` (float [C_out, C_in, k, k]) on ``x`` (float, channels_last) as a
    quantized convolution: uint8 activations, int8 per-channel weights, prepacked for :data:`INT8_ENGINE`.
    (torch deprecates its quantized tensors; its warning is silenced here, and once they are gone this
    raises and the caller leaves int8 blank.)"""
    c_out = weight.shape[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
        qx = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
        qw = torch.quantize_per_channel(weight.contiguous(), torch.full((c_out,), 0.002, dtype=torch.double),
                                        torch.zeros(c_out, dtype=torch.long), 0, torch.qint8)
    packed = torch.ops.quantized.conv2d_prepack(qw, None, [stride] * 2, [k // 2] * 2, [1, 1], 1)
    return lambda: torch.ops.quantized.conv2d(qx, packed, 0.1, 128)


def conv_call(c_in, c_out, k, stride, h, w, dtype):
    """A zero-argument callable running one convolution of a [1, c_in, h, w] channels_last input,
    padding ``k // 2``, under ``torch.inference_mode``.

    ``dtype``: torch.float32 / torch.bfloat16 (input, weight and bias of that dtype, ``F.conv2d``), or
    "int8" (torch's quantized convolution on the oneDNN engine, see :func:`_int8_conv`; raises
    RuntimeError where that engine is missing).
    """
    torch.manual_seed(0)
    x = torch.randn(1, c_in, h, w).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, k, k) * 0.05
    if dtype == "int8":
        if INT8_ENGINE not in torch.backends.quantized.supported_engines:
            raise RuntimeError("torch has no {} quantized engine here (it has {})".format(
                INT8_ENGINE, ", ".join(torch.backends.quantized.supported_engines)))
        with _quantized_engine(INT8_ENGINE):
            run = _int8_conv(x, weight, stride, k)

        def call():
            with torch.inference_mode(), _quantized_engine(INT8_ENGINE):
                return run()
        return call
    x = x.to(dtype)
    weight = weight.to(dtype).contiguous(memory_format=torch.channels_last)
    bias = torch.zeros(c_out, dtype=dtype)

    def call():
        with torch.inference_mode():
            return F.conv2d(x, weight, bias, stride, k // 2)
    return call


def time_conv(c_in, c_out, k, stride, h, w, dtype, runs):
    """Median seconds of :func:`conv_call`'s convolution (same arguments) over ``runs`` calls, after
    two warm-up calls (oneDNN primitive creation)."""
    return median_ms(conv_call(c_in, c_out, k, stride, h, w, dtype), "cpu", runs, 2) / 1e3


TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": "int8"}


def cpu_conv_throughput(dtype, runs=3, conv=CONVS[0]):
    """FLOP/s (2 x multiply-adds per second) of the CPU on ``conv`` (a :data:`CONVS` entry, default
    the head-tower convolution) in ``dtype`` ("fp32", "bf16" or "int8"), median of ``runs``."""
    _, c_in, c_out, k, stride, h, w = conv
    torch_dtype = TORCH_DTYPES[dtype]
    return conv_flops(c_in, c_out, k, stride, h, w) / time_conv(c_in, c_out, k, stride, h, w, torch_dtype, runs)


def model_conv_flops(call):
    """2 x multiply-adds of every convolution ``call()`` runs (each call counted: a layer run twice
    counts twice), N C_out H_out W_out (C_in / groups) k_h k_w each, from the shapes at the aten level
    (``torch.utils.flop_counter.FlopCounterMode``), so whatever module or function issues them counts
    (ours runs its backbone convolutions through ``F.conv2d`` with the frozen norms folded in, which
    forward hooks on ``nn.Conv2d`` would miss). Nothing else (matrix products, post-processing) is
    counted. Runs ``call()`` once under ``torch.inference_mode``; returns a float."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call()
    counts = counter.get_flop_counts().get("Global", {})
    return float(sum(n for op, n in counts.items() if "convolution" in str(op) and "backward" not in str(op)))
