"""Reading ImageNet weights: Detectron (Caffe2) ``.pkl`` blobs and torchvision state dicts.

Both are turned into state dicts with the names of our backbone body (``stem.conv1.weight``,
``layer1.0.bn1.weight``, ...), which the checkpointer then matches by suffix. ``.pkl`` files are
read by a restricted unpickler that builds numpy arrays and plain containers only: a file that
asks for any other object is refused, so loading a file never runs code from it.
"""
import pickle
import re
from collections import OrderedDict

import numpy as np
import torch

from fcos_core.utils.imagenet_weights import torchvision_mobilenet_v2_to_body, torchvision_resnet_to_body

# The only globals a Detectron weight file needs: numpy arrays and their dtypes.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    # Protocol-2 pickles written by Python 3 store bytes as codecs.encode(str, "latin1").
    ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for an object outside the allowed numpy/container types."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fileobj, source):
        super().__init__(fileobj, encoding="latin1")  # Detectron files were written by Python 2
        self._source = source

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {self._source}: it asks for {module}.{name}, and only numpy arrays "
            "and plain containers are allowed in a weight file"
        )


def safe_load_pickle(path):
    """Load a pickle that may hold only numpy arrays, numbers, strings and containers."""
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError) as exc:  # truncated / corrupt
            raise RuntimeError(f"cannot read the weight file {path}: it is truncated, corrupt or not a pickle "
                               f"({type(exc).__name__}: {str(exc)[:200]})") from exc


_STAGE_RENAMES = [
    (r"^res_conv1_bn_([sb])$", r"stem.bn1.\1"),
    (r"^conv1_([wb])$", r"stem.conv1.\1"),
    (r"^conv1_gn_([sb])$", r"stem.bn1.\1"),
    (r"^res([2-5])_(\d+)_", lambda m: f"layer{int(m.group(1)) - 1}.{m.group(2)}."),
    (r"\.branch2([abc])_bn_([sb])$", lambda m: f".bn{'abc'.index(m.group(1)) + 1}.{m.group(2)}"),
    (r"\.branch2([abc])_gn_([sb])$", lambda m: f".bn{'abc'.index(m.group(1)) + 1}.{m.group(2)}"),
    (r"\.branch2([abc])_([wb])$", lambda m: f".conv{'abc'.index(m.group(1)) + 1}.{m.group(2)}"),
    (r"\.branch1_bn_([sb])$", r".downsample.1.\1"),
    (r"\.branch1_gn_([sb])$", r".downsample.1.\1"),
    (r"\.branch1_([wb])$", r".downsample.0.\1"),
]
_SUFFIXES = {"w": "weight", "b": "bias", "s": "weight"}


def rename_c2_resnet_key(name):
    """Detectron blob name to our ResNet body key, or None for blobs we do not use.

    ``res2_0_branch2a_w`` -> ``layer1.0.conv1.weight``; ``res_conv1_bn_s`` ->
    ``stem.bn1.weight``; ``res3_1_branch1_bn_b`` -> ``layer2.1.downsample.1.bias``. The
    affine-channel scale (``_s``) becomes the FrozenBatchNorm weight; Detectron files have no
    running statistics, which keep their defaults (mean 0, variance 1).
    """
    if name.startswith("fc") or name.endswith("_momentum") or name.endswith("_riv") or name.endswith("_rm"):
        return None
    out = name
    for pattern, repl in _STAGE_RENAMES:
        out = re.sub(pattern, repl, out)
    head, _, last = out.rpartition(".")
    if not head or last not in _SUFFIXES:
        return None
    return f"{head}.{_SUFFIXES[last]}"


def load_c2_format(path):
    """State dict of our ResNet body names from a Detectron ``.pkl`` ImageNet file."""
    data = safe_load_pickle(path)
    if isinstance(data, dict) and "blobs" in data:
        data = data["blobs"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of weight blobs, found {type(data).__name__}")
    state = OrderedDict()
    for name, value in data.items():
        key = rename_c2_resnet_key(name)
        if key is None or not isinstance(value, np.ndarray):
            continue
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    if not state:
        raise ValueError(f"{path}: no ResNet weights found (blob names like 'res2_0_branch2a_w' expected)")
    return state


def convert_torchvision_state_dict(state_dict):
    """A torchvision ImageNet classifier state dict with our backbone body's key names.

    ResNet/ResNeXt through :func:`~fcos_core.utils.imagenet_weights.torchvision_resnet_to_body`,
    MobileNetV2 (``features.*``) through
    :func:`~fcos_core.utils.imagenet_weights.torchvision_mobilenet_v2_to_body`.
    """
    if any(k.startswith("features.") for k in state_dict):
        return torchvision_mobilenet_v2_to_body(state_dict)
    return torchvision_resnet_to_body(state_dict)


def rename_deformable_conv_weights(state_dict, model_keys):
    """ImageNet weights of the 3x3 convs that the model made deformable, under the model's names.

    A deformable ``conv2`` of a ResNet stage (MODEL.RESNETS.STAGE_WITH_DCN) is a ``DFConv2d``: its
    kernel is ``layerN.M.conv2.conv.weight``, where an ImageNet file (Detectron ``.pkl`` or
    torchvision, after renaming to body names) has ``layerN.M.conv2.weight``. As the original's
    ``_rename_conv_weights_for_deformable_conv_layers``, those are renamed, so the deformable convs
    start from the ImageNet kernels (their offset convs keep their own initialisation).

    Args:
        state_dict: body-named ImageNet weights (``layer2.0.conv2.weight``, ...).
        model_keys: the model's state-dict keys (``backbone.body.layer2.0.conv2.conv.weight``, ...).

    Returns:
        (OrderedDict, list[str]): the renamed state dict (tensors shared) and the renamed keys' old names.
    """
    deformable = set()
    for key in model_keys:
        match = _DEFORMABLE_KERNEL.search(key)
        if match:
            deformable.add(match.group(1))
    out, renamed = OrderedDict(), []
    for key, value in state_dict.items():
        stem, dot, leaf = key.rpartition(".")
        if stem in deformable and leaf in ("weight", "bias"):
            out[f"{stem}.conv.{leaf}"] = value
            renamed.append(key)
        else:
            out[key] = value
    return out, renamed


# ``layerN.M.conv2`` of a model key ``...layerN.M.conv2.conv.weight`` (a DFConv2d's kernel)
_DEFORMABLE_KERNEL = re.compile(r"(?:^|\.)(layer\d+\.\d+\.conv\d)\.conv\.weight$")


def looks_like_torchvision_classifier(state_dict):
    """True for a torchvision ResNet/ResNeXt/MobileNetV2 ImageNet state dict."""
    keys = set(state_dict.keys())
    resnet = "conv1.weight" in keys and "fc.weight" in keys
    mobilenet = any(k.startswith("features.") for k in keys) and any(k.startswith("classifier.") for k in keys)
    return resnet or mobilenet
