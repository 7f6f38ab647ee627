"""The detector's ONNX export run by onnxruntime or OpenVINO behind TEST.BACKEND, exported on first use.

:func:`make_backend_runner` turns the config into a runner (None for "pytorch"): a callable taking
an :class:`~fcos_core.structures.image_list.ImageList` of images after the test transforms (padded
batch ``[N, 3, H, W]`` plus ``image_sizes``) and returning one ``BoxList`` per image, as the PyTorch
model does: ``xyxy`` boxes in pixels of the resized (unpadded) image, fields "scores" float32 [K]
and "labels" int64 [K] (1..C), highest score first, on the CPU. The graph (fcos_core/export/onnx.py)
takes one unpadded image ``[1, 3, h, w]`` and pads it itself, so a batch runs image by image.

The export lives in a cache folder (TEST.ONNX_CACHE_DIR, default ``$TORCH_HOME/fcos_onnx_cache``)
under a key hashing the config that shapes the graph, the weight file's SHA-256 and the opset, and
is written atomically (a temporary file renamed into place). A cached file is used only when its
metadata carries the same key and class count and it is not older than the weight file; otherwise
it is exported again (a log line says why). Both runtimes run in float32 on the CPU; with
TEST.ONNX_PRECISION "int8" they run the export's int8 twin (convolutions quantized, the rest float32)
that tools/quantize_onnx.py wrote beside it (fcos_core/export/quantize.py), which must carry the same
key and not be older than the weights; it is never made or refreshed silently. TEST.ONNX_PRECISION
"bf16" (OpenVINO only) runs the float32 export with OpenVINO's ``INFERENCE_PRECISION_HINT`` bf16,
only on a CPU with native bfloat16 (AVX-512 BF16 or AMX): elsewhere OpenVINO would quietly run f32.
"""
import hashlib
import json
import logging
import os
import tempfile

import numpy as np
import torch

from fcos_core.structures.bounding_box import BoxList
from fcos_core.utils.weight_cache import sha256_of

__all__ = ["BACKENDS", "check_backend", "require_backend", "OnnxRuntimeRunner", "OpenVinoRunner", "make_backend_runner", "cached_export",
           "export_cache_key", "default_cache_dir", "BackendOpError", "check_native_bf16"]

BACKENDS = ("pytorch", "onnxruntime", "openvino")
EXTRAS = {"onnxruntime": ("onnxruntime", "export"), "openvino": ("openvino", "openvino")}  # module, extra
KEY = "fcos_export_key"  # metadata entry: the cache key the file was exported under
logger = logging.getLogger(__name__)


class BackendOpError(RuntimeError):
    """The runtime cannot run an op of the exported graph (the message names it)."""


def require_backend(name):
    """Import and return the runtime module of TEST.BACKEND ``name`` ("onnxruntime" or "openvino").

    Raises:
        ValueError: an unknown backend name.
        ImportError: one line naming the package and the extra that installs it.
    """
    if name not in EXTRAS:
        raise ValueError("TEST.BACKEND {!r}: expected one of {}".format(name, ", ".join(BACKENDS)))
    module, extra = EXTRAS[name]
    try:
        return __import__(module)
    except ImportError:
        raise ImportError('TEST.BACKEND {!r} needs the {} package: pip install "fcos_core[{}]"'.format(
            name, module, extra)) from None


def check_backend(name):
    """Nothing for "pytorch"; else :func:`require_backend` (same errors)."""
    if name != "pytorch":
        require_backend(name)


def default_cache_dir():
    """``$TORCH_HOME/fcos_onnx_cache`` (TORCH_HOME defaulting to ``$XDG_CACHE_HOME/torch``, ``~/.cache/torch``)."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(os.environ.get("TORCH_HOME", os.path.join(cache, "torch")), "fcos_onnx_cache")


def _graph_config(cfg):
    """The parts of ``cfg`` that shape the exported graph, as yaml text (the weights are hashed apart)."""
    model = cfg.MODEL.clone()
    model.defrost()
    model.WEIGHT, model.DEVICE = "", "cpu"
    return "{}\nDETECTIONS_PER_IMG: {}\nSIZE_DIVISIBILITY: {}\n".format(
        model.dump(), cfg.TEST.DETECTIONS_PER_IMG, cfg.DATALOADER.SIZE_DIVISIBILITY)


def export_cache_key(cfg, weight_sha256, opset):
    """A 24-hex-digit key of the graph config of ``cfg`` (str), the weights' SHA-256 and the opset."""
    text = "{}\nweights: {}\nopset: {}\ntorch: {}\n".format(_graph_config(cfg), weight_sha256, opset,
                                                            torch.__version__)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_metadata(path):
    """The ``metadata_props`` of an ONNX file as a dict (str -> str)."""
    import onnx

    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def _stale_reason(path, key, weight, num_classes):
    """Why the cached export ``path`` may not be used (str), or None when it fits."""
    try:
        metadata = _read_metadata(path)
    except Exception as exc:  # a truncated or foreign file
        return "it is not a readable ONNX file ({}: {})".format(type(exc).__name__, exc)
    if metadata.get(KEY) != key:
        return "it was exported for another config, weights or opset (key {!r}, expected {!r})".format(
            metadata.get(KEY), key)
    classes = len(json.loads(metadata.get("categories", "[]")))
    if classes != num_classes:
        return "it names {} classes, background included; the config has {}".format(classes, num_classes)
    if os.path.getmtime(path) < os.path.getmtime(weight):
        return "it is older than the weight file {}".format(weight)
    return None


def cached_export(cfg, weight, cache_dir=None, opset=None):
    """The path of the ONNX export (with post-processing) of ``cfg`` with the weight file ``weight``,
    exported now unless a fitting one is in ``cache_dir`` (None: TEST.ONNX_CACHE_DIR or
    :func:`default_cache_dir`).

    ``cfg`` must give MODEL.FCOS.NUM_CLASSES (> 0, see ``resolve_num_classes_for_inference``).

    Raises:
        OSError: the cache folder cannot be written (named).
    """
    from fcos_core.export.onnx import export_checkpoint, write_metadata

    cache_dir = cache_dir or cfg.TEST.ONNX_CACHE_DIR or default_cache_dir()
    # opset None: export_onnx's default for the config (17, or 19 with deformable convolutions)
    key = export_cache_key(cfg, sha256_of(weight), opset or "default")
    path = os.path.join(cache_dir, "fcos_{}.onnx".format(key))
    if os.path.exists(path):
        reason = _stale_reason(path, key, weight, cfg.MODEL.FCOS.NUM_CLASSES)
        if reason is None:
            logger.info("Using the cached ONNX export %s", path)
            return path
        logger.warning("Not using the cached ONNX export %s: %s; exporting again", path, reason)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=cache_dir)
        os.close(fd)
    except OSError as exc:
        raise OSError("TEST.ONNX_CACHE_DIR {}: cannot write the ONNX export there ({})".format(cache_dir, exc)) from exc
    try:
        export_cfg = cfg.clone()
        export_cfg.defrost()
        export_cfg.MODEL.WEIGHT, export_cfg.MODEL.DEVICE = weight, "cpu"
        logger.info("Exporting %s to ONNX (first use of these weights and config) ...", weight)
        export_checkpoint(export_cfg, tmp, opset=opset)
        write_metadata(tmp, {KEY: key})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("ONNX export written to %s", path)
    return path


def _op_types(path):
    import onnx

    return sorted({node.op_type for node in onnx.load(path, load_external_data=False).graph.node})


def _op_error(backend, path, exc):
    """A :class:`BackendOpError` naming the graph's ops that ``exc``'s message mentions."""
    message = str(exc).strip()
    named = [op for op in _op_types(path) if op in message]
    ops = "op {} ".format(", ".join(named)) if named else ""
    first = message.splitlines()[0] if message else type(exc).__name__
    return BackendOpError("TEST.BACKEND {!r} cannot run {}of {}: {}".format(backend, ops or "the graph ", path, first))


def _to_boxlist(boxes, scores, labels, size):
    """A BoxList (``xyxy``, image size ``size`` = (w, h)) from the graph's numpy outputs."""
    result = BoxList(torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)).reshape(-1, 4), size, mode="xyxy")
    result.add_field("scores", torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).reshape(-1))
    result.add_field("labels", torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)).reshape(-1))
    return result


def _images(image_list):
    """Yield (float32 array [1, 3, h, w], (w, h)) per image of ``image_list``, unpadded, on the CPU."""
    tensors = image_list.tensors.detach().to("cpu", torch.float32)
    for i, (h, w) in enumerate(image_list.image_sizes):
        yield tensors[i:i + 1, :, :h, :w].contiguous().numpy(), (w, h)


class OnnxRuntimeRunner(object):
    """The exported graph at ``path`` under onnxruntime (CPUExecutionProvider, ``num_threads`` threads,
    None: torch's). ``__call__(image_list) -> list[BoxList]`` (see the module docstring)."""

    def __init__(self, path, num_threads=None):
        ort = require_backend("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        self.path = path
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / NotImplemented / InvalidGraph types
            raise _op_error("onnxruntime", path, exc) from exc

    def __call__(self, image_list):
        return [_to_boxlist(*self.session.run(["boxes", "scores", "labels"], {"image": image}), size)
                for image, size in _images(image_list)]

    def __repr__(self):
        return "OnnxRuntimeRunner({})".format(self.path)


OPENVINO_PRECISIONS = ("f32", "bf16")  # OpenVinoRunner's precision: INFERENCE_PRECISION_HINT
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bfloat16 (fcos_core.utils.env)


def check_native_bf16(what):
    """A ValueError starting with ``what`` (the option asking for bf16) on a CPU without native
    bfloat16 (:func:`fcos_core.utils.env.cpu_has_fast_bf16` False), where OpenVINO's bf16 hint would
    silently run float32."""
    from fcos_core.utils import env

    if not env.cpu_has_fast_bf16():
        raise ValueError("{} needs a CPU with native bfloat16 (flag {} in /proc/cpuinfo); this CPU has neither, "
                         "and OpenVINO would silently run float32 instead; use 'fp32'".format(what, " or ".join(BF16_FLAGS)))


class OpenVinoRunner(object):
    """The exported graph at ``path`` under OpenVINO on the CPU, ``num_threads`` threads (None:
    torch's), ``precision`` "f32" or "bf16" (OpenVINO's INFERENCE_PRECISION_HINT: float32, or
    bfloat16 convolutions and matrix products with float32 elsewhere).
    ``__call__(image_list) -> list[BoxList]``.

    Raises:
        ValueError: an unknown ``precision``; "bf16" on a CPU without native bfloat16
            (:func:`check_native_bf16`), or when OpenVINO does not take the hint.
    """

    def __init__(self, path, num_threads=None, precision="f32"):
        if precision not in OPENVINO_PRECISIONS:
            raise ValueError("OpenVINO precision {!r}: expected one of {}".format(precision, ", ".join(OPENVINO_PRECISIONS)))
        if precision == "bf16":
            check_native_bf16("OpenVINO precision 'bf16'")
        ov = require_backend("openvino")
        core = ov.Core()
        self.path, self.precision = path, precision
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": num_threads or torch.get_num_threads()}
        try:
            self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        except Exception as exc:  # OpConversionFailure, RuntimeError: both name the op in their message
            raise _op_error("openvino", path, exc) from exc
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type
        used = used.get_type_name() if hasattr(used, "get_type_name") else str(used)
        if used != precision:  # nothing falls back silently
            raise ValueError("OpenVINO compiled {} with precision {!r} instead of the {!r} asked for".format(
                path, used, precision))
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in ("boxes", "scores", "labels")]

    def __call__(self, image_list):
        results = []
        for image, size in _images(image_list):
            out = self.request.infer({"image": image})
            results.append(_to_boxlist(*[out[port] for port in self.outputs], size))
        return results

    def __repr__(self):
        return "OpenVinoRunner({}, precision={!r})".format(self.path, self.precision)


RUNNERS = {"onnxruntime": OnnxRuntimeRunner, "openvino": OpenVinoRunner}


def make_backend_runner(cfg, weight):
    """The runner of TEST.BACKEND for ``cfg`` and the weight file ``weight`` (a path, URL or
    model-zoo name), or None for "pytorch".

    ``cfg`` must give MODEL.FCOS.NUM_CLASSES (> 0). TEST.AMP and TEST.BBOX_AUG are PyTorch-only:
    asking for them with another backend is a ValueError rather than a silent float32 / plain run;
    so is TEST.ONNX_PRECISION "bf16" with onnxruntime or on a CPU without native bfloat16.
    """
    name = cfg.TEST.BACKEND
    if name == "pytorch":
        return None
    require_backend(name)
    if cfg.TEST.AMP or cfg.TEST.BBOX_AUG.ENABLED:
        raise ValueError("TEST.BACKEND {!r} runs the ONNX export without autocast or test-time augmentation (its "
                         "precision is TEST.ONNX_PRECISION's: 'fp32', 'int8', or 'bf16' under 'openvino'); "
                         "TEST.AMP and TEST.BBOX_AUG.ENABLED need TEST.BACKEND 'pytorch'".format(name))
    from fcos_core.utils.model_zoo import resolve_weight

    local = resolve_weight(weight) if weight else ""
    if not local or not os.path.isfile(local):
        raise FileNotFoundError("TEST.BACKEND {!r} exports the model from its weight file; MODEL.WEIGHT {!r} "
                                "is not a file".format(name, weight))
    precision = _check_precision(cfg.TEST.ONNX_PRECISION, name)
    path = cached_export(cfg, local)
    if precision == "int8":
        path = _int8_export(path, local, cfg.MODEL.FCOS.NUM_CLASSES)
    if precision == "bf16":
        return OpenVinoRunner(path, precision="bf16")
    return RUNNERS[name](path)


def _check_precision(precision, backend):
    """TEST.ONNX_PRECISION ``precision`` (returned) if ``backend`` can run it, else a ValueError
    naming the key: "bf16" is OpenVINO's precision hint on the float32 export, on CPUs with native
    bfloat16 only (onnxruntime has no such option)."""
    if precision not in ("fp32", "int8", "bf16"):
        raise ValueError("TEST.ONNX_PRECISION {!r}: expected 'fp32' or 'int8' (or 'bf16' with TEST.BACKEND "
                         "'openvino')".format(precision))
    if precision == "bf16" and backend != "openvino":
        raise ValueError("TEST.ONNX_PRECISION 'bf16' is OpenVINO-only (its bf16 precision hint on the float32 "
                         "export); TEST.BACKEND is {!r}: use TEST.BACKEND 'openvino', or 'fp32' / 'int8'".format(backend))
    if precision == "bf16":
        check_native_bf16("TEST.ONNX_PRECISION 'bf16'")
    return precision


def _int8_export(fp32_path, weight, num_classes):
    """The int8 twin of the export ``fp32_path`` that tools/quantize_onnx.py wrote (same cache key).

    Raises:
        FileNotFoundError: there is none (the message gives the command that makes it).
        ValueError: it does not fit (another config, weights or class count; older than the weights).
    """
    from .quantize import int8_path

    path = int8_path(fp32_path)
    command = "tools/quantize_onnx.py --config-file <config> MODEL.WEIGHT {} (with the same options)".format(weight)
    if not os.path.exists(path):
        raise FileNotFoundError("TEST.ONNX_PRECISION 'int8': no int8 model at {}; make it with {}".format(path, command))
    reason = _stale_reason(path, _read_metadata(fp32_path)[KEY], weight, num_classes)
    if reason is not None:
        raise ValueError("TEST.ONNX_PRECISION 'int8': the int8 model {} does not fit: {}; make it again with {}".format(
            path, reason, command))
    return path
