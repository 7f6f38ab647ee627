"""TEST.COMPILE: the dense part of a detector through ``torch.compile`` for inference.

The backbone (body + FPN) and the FCOS head (towers and predictors) are compiled by inductor with
frozen weights (``options={"freezing": True}``): on a CPU the weights become constants, so the
convolutions are prepacked for oneDNN once and run as ``mkldnn::_convolution_pointwise`` with the
bias, ReLU and residual add fused into them. The rest stays eager: the locations and the
post-processing (top-k, NMS), whose shapes depend on the data.

Compiled with ``dynamic=True``: one compilation serves every image size (the first call per shape
family, e.g. with and without autocast, or another batch size, takes tens of seconds). Compiled with
``fullgraph=True``: a graph break is an error, not a silent partly eager run. Inductor's freezing
only applies without autograd, so the compiled parts always run under ``torch.no_grad``.
"""
import copy
import logging

import torch

COMPILE_OPTIONS = {"freezing": True}  # per torch.compile call (and patched in while tracing, see forward)
FIX = "set TEST.COMPILE False to run the model eagerly"


class FrozenCompiled(torch.nn.Module):
    """``module`` compiled by inductor with frozen weights, run under ``torch.no_grad``.

    forward(*inputs) returns what ``module(*inputs)`` returns (up to float rounding). Its weights are
    read at the first call of each compilation: changing them afterwards has no effect, so this is
    only ever made from an inference copy (:func:`compile_for_inference`). An inductor failure (no
    C++ compiler, an op it cannot lower) is a RuntimeError naming TEST.COMPILE; nothing falls back
    to eager.
    """

    def __init__(self, module, name):
        super().__init__()
        self.name = name
        self.compiled = torch.compile(module, dynamic=True, fullgraph=True, options=dict(COMPILE_OPTIONS))

    def forward(self, *inputs):
        from torch._dynamo.exc import FailOnRecompileLimitHit, TorchDynamoException
        from torch._inductor import config as inductor_config

        # the options passed to torch.compile reach inductor only; dynamo reads the global
        # inductor_config.freezing while tracing to make the weights constants (without it they
        # are graph inputs and no convolution is prepacked), so it is set for this call alone
        with torch.no_grad(), inductor_config.patch(freezing=True):
            try:
                return self.compiled(*inputs)
            except FailOnRecompileLimitHit as exc:
                raise RuntimeError(
                    "TEST.COMPILE: the {} was compiled more often than torch._dynamo.config.recompile_limit allows "
                    "(one compilation per compiled copy and shape family, in one process); prepare fewer compiled "
                    "copies, or {}".format(self.name, FIX)) from exc
            except TorchDynamoException as exc:  # inductor's failures, graph breaks (fullgraph)
                first = (str(exc).strip().splitlines() or [""])[0]
                raise RuntimeError("TEST.COMPILE: torch.compile could not compile the {} ({}: {}); {}".format(
                    self.name, type(exc).__name__, first, FIX)) from exc

    def __repr__(self):
        return "FrozenCompiled({}, dynamic=True, options={})".format(self.name, COMPILE_OPTIONS)


def check_cpp_compiler():
    """RuntimeError naming TEST.COMPILE when inductor finds no C++ compiler (it needs one on a CPU)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except ImportError:  # a torch without inductor's builder: the first call will tell
        return
    except Exception as exc:
        raise RuntimeError("TEST.COMPILE: inductor needs a C++ compiler on the CPU and found none ({}: {}); "
                           "install g++ (or set CXX), or {}".format(type(exc).__name__, exc, FIX)) from exc


def compile_for_inference(model, device=None, in_place=False):
    """A copy of the detector ``model`` whose ``backbone`` and ``rpn.head`` are :class:`FrozenCompiled`.

    Args:
        model: a detector prepared for inference (GeneralizedRCNN: ``backbone``, ``rpn.head``), in
            eval mode; it is never changed (the copy owns its weights).
        device: where it runs (default: the device of its first parameter); a CPU needs a C++ compiler.
        in_place: compile ``model``'s own parts instead of a copy's (for a model that is already an
            inference copy, e.g. one with folded norms).

    Returns the copy, in eval mode; ``copy(images)`` gives the detections of ``model(images)`` (list of
    BoxList, xyxy pixels). Compilation happens at its first call, which is slow (tens of seconds).
    """
    if device is None:
        device = next(model.parameters()).device
    if torch.device(device).type == "cpu":
        check_cpp_compiler()
    logging.getLogger("fcos_core.inference").info(
        "TEST.COMPILE: compiling the backbone and the FCOS head with torch.compile (inductor, frozen weights, "
        "dynamic shapes); the first call per shape family (size range, autocast, batch size) takes tens of seconds")
    compiled = (model if in_place else copy.deepcopy(model)).eval()
    compiled.backbone = FrozenCompiled(compiled.backbone, "backbone")
    compiled.rpn.head = FrozenCompiled(compiled.rpn.head, "FCOS head")
    return compiled
