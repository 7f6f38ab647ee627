"""Which library wrote a loaded checkpoint: the format names that :func:`convert_checkpoint` takes.

A checkpoint here is what ``torch.load`` (or, for a Detectron ``.pkl``, the restricted unpickler)
returned: usually a dict, either a state dict itself or one that holds it under "model" (ours, the
original FCOS, torchvision's references) or "state_dict" (mmdetection).
"""
from collections import OrderedDict

from fcos_core.utils.c2_model_loading import looks_like_torchvision_classifier
from fcos_core.utils.formats.mmdet import looks_like_mmdet_fcos
from fcos_core.utils.formats.torchvision import looks_like_torchvision_fcos

# format name -> what it is, for messages (the order is the order of the checks)
FORMATS = OrderedDict([
    ("fcos", "this codebase's or the original FCOS's detector ({'model': state_dict} or a bare state dict, "
             "keys backbone.body.* / rpn.head.*, maybe with a 'module.' prefix)"),
    ("torchvision_fcos", "torchvision's FCOS (torchvision.models.detection.fcos_resnet50_fpn state dict)"),
    ("mmdet_fcos", "mmdetection's FCOS ({'state_dict': ..., 'meta': ...} or a bare state dict, "
                   "keys backbone.* / neck.* / bbox_head.*)"),
    ("torchvision_imagenet", "a torchvision ImageNet classifier (ResNet/ResNeXt/MobileNetV2)"),
    ("detectron_pkl", "a Detectron (Caffe2) .pkl of ImageNet weights (blob names like res2_0_branch2a_w)"),
])
UNKNOWN = "unknown"
# the formats that are whole detectors of another library: converted, then checked against the config
OTHER_DETECTORS = ("torchvision_fcos", "mmdet_fcos")


def wrapper_key(checkpoint):
    """The key ("model" or "state_dict") under which the dict ``checkpoint`` holds its state dict,
    or None when it is a state dict itself."""
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint.get(wrapper), dict):
            return wrapper
    return None


def state_dict_of(checkpoint):
    """The state dict inside ``checkpoint`` (under :func:`wrapper_key`, else the dict itself), with a
    "module." prefix (DistributedDataParallel) removed from its keys; None when there is no dict."""
    if not isinstance(checkpoint, dict):
        return None
    wrapper = wrapper_key(checkpoint)
    state = checkpoint[wrapper] if wrapper else checkpoint
    keys = list(state.keys())
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
    return state


def _looks_like_ours(state):
    keys = [k for k in state if isinstance(k, str)]
    return any(k.startswith("backbone.body.") for k in keys) and any(k.startswith("rpn.head.") for k in keys)


def _looks_like_detectron_pkl(checkpoint):
    blobs = checkpoint.get("blobs", checkpoint)
    if not isinstance(blobs, dict):
        return False
    names = [k for k in blobs if isinstance(k, str)]
    return any(n.startswith(("res2_", "conv1_", "res_conv1_")) for n in names) and not any("." in n for n in names)


def detect_format(checkpoint):
    """The format of a loaded checkpoint: a key of :data:`FORMATS`, or ``"unknown"``.

    Args:
        checkpoint: the object a checkpoint file holds (dict of tensors, or a dict wrapping one).
    """
    state = state_dict_of(checkpoint)
    if not state:
        return UNKNOWN
    if _looks_like_ours(state):
        return "fcos"
    if looks_like_torchvision_fcos(state):
        return "torchvision_fcos"
    if looks_like_mmdet_fcos(state):
        return "mmdet_fcos"
    if looks_like_torchvision_classifier(state):
        return "torchvision_imagenet"
    if _looks_like_detectron_pkl(checkpoint):
        return "detectron_pkl"
    return UNKNOWN


def first_keys(checkpoint, count=6):
    """A short description of ``checkpoint``'s top-level keys and its state dict's first keys, for errors."""
    if not isinstance(checkpoint, dict):
        return "a {}, not a dict".format(type(checkpoint).__name__)
    top = list(checkpoint.keys())
    state = state_dict_of(checkpoint) or {}
    inner = list(state.keys())
    text = "top-level keys {}".format(_listed(top, count))
    if state is not checkpoint and inner:
        text += "; state dict keys {}".format(_listed(inner, count))
    return text


def _listed(keys, count):
    shown = ", ".join(repr(k) for k in keys[:count])
    more = " ... ({} in all)".format(len(keys)) if len(keys) > count else ""
    return "[{}{}]".format(shown, more)
