"""mmdetection's FCOS checkpoints (ResNet/ResNeXt + FPN + FCOSHead) under our detector's key names.

mmdetection writes ``{"meta": {...}, "state_dict": {...}}`` with keys ``backbone.*`` (its ResNet:
``conv1``/``bn1`` stem, ``layerN.M.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1}``; a DCNv2
3x3 conv adds ``conv2.conv_offset.{weight,bias}``), ``neck.*`` (FPN from C3, ``lateral_convs.i.conv``
and ``fpn_convs.i.conv``, i = 3, 4 the P6/P7 convs) and ``bbox_head.*`` (``cls_convs.i`` / ``reg_convs.i``
ConvModules: ``conv`` + ``gn``, the conv without bias unless the config sets ``conv_bias=True``;
``conv_cls``, ``conv_reg``, ``conv_centerness``; ``scales.i.scale`` scalars). They map one to one:

==============================================  ================================================
mmdetection                                     ours
==============================================  ================================================
backbone.conv1 / bn1                            backbone.body.stem.conv1 / bn1
backbone.layerN.M.<same>                        backbone.body.layerN.M.<same>
backbone.layerN.M.conv2 (DCN) / .conv_offset    backbone.body.layerN.M.conv2.conv / .offset
neck.lateral_convs.i.conv (i = 0..2)            backbone.fpn.fpn_inner{i+2}
neck.fpn_convs.i.conv (i = 0..2, 3, 4)          backbone.fpn.fpn_layer{i+2}, top_blocks.p6, p7
bbox_head.cls_convs.i.conv / .gn                rpn.head.cls_tower.{3i} / {3i+1} (reg: bbox_tower)
bbox_head.conv_cls / conv_reg / conv_centerness rpn.head.cls_logits / bbox_pred / centerness
bbox_head.scales.i.scale (shape [])             rpn.head.scales.i.scale (shape [1])
==============================================  ================================================

BatchNorm's ``num_batches_tracked`` is dropped; tower conv biases that mmdetection does not have are
zeros (the conv is followed by GroupNorm, so zero is the same as none). Which config the weights need is
partly in the tensors (depth, groups, DCN, P6 input) and partly not (stride placement, the imprv
"tricks", the input normalisation): those come from the model zoo entry named by ``meta["zoo_name"]``,
else from the config text mmdetection keeps in ``meta["config"]`` (``meta["cfg"]`` in 3.x), else from
mmdetection's released models (a conv bias in the towers means the tricks config; groups > 1 means a
pytorch-style ResNeXt).
"""
import difflib
import re
from collections import OrderedDict

import torch

from .mmdet_zoo import DETECTRON2_CAFFE, DETECTRON_CAFFE, MMDET_MODELS, PYTORCH_RGB, MmdetSettings, mmdet_zoo_entry
from .report import ConversionReport

__all__ = ["looks_like_mmdet_fcos", "mmdet_fcos_to_detector", "MMDET_MODELS", "mmdet_zoo_entry"]

_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_BN = ("weight", "bias", "running_mean", "running_var")
_FPN_STRIDES = [8, 16, 32, 64, 128]


def looks_like_mmdet_fcos(state_dict):
    """True for an mmdetection FCOS state dict (or a checkpoint dict holding one under "state_dict"):
    keys ``backbone.*``, ``neck.*`` and a ``bbox_head`` centerness conv (``conv_centerness`` or the
    pre-2.0 ``fcos_centerness``)."""
    state = _unwrap(state_dict)[0]
    if not isinstance(state, dict):
        return False
    keys = [k for k in state if isinstance(k, str)]
    return (any(k.startswith("backbone.") for k in keys) and any(k.startswith("neck.") for k in keys)
            and any(k in ("bbox_head.conv_centerness.weight", "bbox_head.fcos_centerness.weight") for k in keys))


def mmdet_fcos_to_detector(state_dict, meta=None):
    """Convert an mmdetection FCOS state dict to ours.

    Args:
        state_dict: mmdetection's ``state_dict`` (name -> tensor), or the whole checkpoint dict
            (``{"meta": ..., "state_dict": ...}``; its "meta" is used when ``meta`` is None).
        meta: the checkpoint's "meta" dict or None; read: "zoo_name" (a name of :data:`MMDET_MODELS`,
            set by whoever downloaded the file) and "config" or "cfg" (mmdetection's config text).

    Returns:
        (OrderedDict of our key -> tensor (the same tensors; scales reshaped to [1]; filled biases new
        zeros), :class:`ConversionReport`), loadable with ``strict=True`` into the detector built from
        ``report.suggested_config`` (any config with ``report.required_config``).

    Raises:
        ValueError naming the key: a key this layout does not have, a tensor of the wrong shape, a
        missing tensor, or an architecture our detector does not build.
    """
    state, meta = _unwrap(state_dict, meta)
    if not looks_like_mmdet_fcos(state):
        raise ValueError("not an mmdetection FCOS checkpoint: it needs keys backbone.*, neck.* and "
                         "bbox_head.conv_centerness.weight; first keys: {}".format(list(state)[:5]))
    arch = _architecture(state)
    rows = _backbone_rows(arch) + _neck_rows(arch) + _head_rows(arch)
    report = ConversionReport(source="mmdetection")
    out = _take(state, rows, report)
    settings, origin = _settings(meta, arch)
    report.required_config = _required_config(arch, settings)
    report.suggested_config, zoo_note = _suggest(meta, arch, settings)
    report.notes += [origin] + zoo_note + _notes(arch, settings)
    return out, report


def _unwrap(checkpoint, meta=None):
    """(state dict, meta) of a bare state dict or of ``{"state_dict": ..., "meta": ...}``."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        return checkpoint["state_dict"], meta if meta is not None else checkpoint.get("meta")
    return checkpoint, meta


def _need(state, key, what):
    if key not in state:
        raise ValueError("mmdetection FCOS checkpoint: no {} ({}); our detector needs a ResNet/ResNeXt "
                         "bottleneck backbone, an FPN from C3 and an FCOSHead".format(key, what))
    return state[key]


def _architecture(state):
    """What the tensors say: ResNet blocks and widths, groups, DCN, FPN and head sizes (a dict)."""
    blocks = tuple(len({k.split(".")[2] for k in state if k.startswith("backbone.layer{}.".format(s))})
                   for s in range(1, 5))
    if blocks not in _DEPTHS:
        raise ValueError("mmdetection FCOS checkpoint: backbone.layer1..4 have {} blocks; our ResNets have "
                         "{}".format(blocks, ", ".join("{} (R-{})".format(b, d) for b, d in _DEPTHS.items())))
    _need(state, "backbone.layer1.0.conv3.weight", "a bottleneck's third conv: ResNet-18/34 are not built here")
    width = _need(state, "backbone.layer1.0.conv1.weight", "the first block's 1x1 conv").shape[0]
    offsets = [k for k in state if k.startswith("backbone.") and k.endswith("conv2.conv_offset.weight")]
    head_convs = {int(k.split(".")[2]) for k in state if k.startswith("bbox_head.cls_convs.")}
    lateral = _need(state, "neck.lateral_convs.0.conv.weight", "the FPN's C3 lateral conv")
    pred = "fcos_" if "bbox_head.fcos_cls.weight" in state else "conv_"
    arch = dict(
        blocks=blocks, depth=_DEPTHS[blocks], width=width,
        groups=width // _need(state, "backbone.layer1.0.conv2.weight", "the first block's 3x3 conv").shape[1],
        stem=_need(state, "backbone.conv1.weight", "the stem conv").shape[0],
        res2_out=state["backbone.layer1.0.conv3.weight"].shape[0],
        stage_dcn=tuple(any(k.startswith("backbone.layer{}.".format(s)) for k in offsets) for s in range(1, 5)),
        offset_channels=state[offsets[0]].shape[0] if offsets else 0,
        channels=lateral.shape[0], c3=lateral.shape[1],
        use_c5=_need(state, "neck.fpn_convs.3.conv.weight", "the P6 conv").shape[1] != lateral.shape[0],
        num_convs=len(head_convs), pred=pred,
        head_dcn="bbox_head.cls_convs.{}.conv.conv_offset.weight".format(len(head_convs) - 1) in state,
        conv_bias="bbox_head.cls_convs.0.conv.bias" in state,
        num_classes=_need(state, "bbox_head.{}cls.weight".format(pred), "the classifier").shape[0])
    if arch["c3"] != arch["res2_out"] * 2:
        raise ValueError("mmdetection FCOS checkpoint: neck.lateral_convs.0.conv.weight takes {} channels, not "
                         "C3's {}: our FPN starts at C3 (mmdetection's start_level=1)".format(arch["c3"],
                                                                                             arch["res2_out"] * 2))
    return arch


def _bn_rows(src, dst, n):
    return [("{}.{}".format(src, p), "{}.{}".format(dst, p), (n,)) for p in _BN]


def _conv_rows(src, dst, shape, dcn, offsets, in_ch, bias=False):
    """A conv's rows; a DCN conv's weight goes to ``<dst>.conv`` and its ``conv_offset`` (``offsets``
    output channels, ``in_ch`` input channels) to ``<dst>.offset``."""
    rows = [(src + ".weight", dst + (".conv" if dcn else "") + ".weight", shape)]
    if bias:
        rows.append((src + ".bias", dst + (".conv" if dcn else "") + ".bias", shape[:1]))
    if dcn:
        rows += [(src + ".conv_offset.weight", dst + ".offset.weight", (offsets, in_ch, 3, 3)),
                 (src + ".conv_offset.bias", dst + ".offset.bias", (offsets,))]
    return rows


def _backbone_rows(arch):
    """(mmdetection key, our key, shape) for the ResNet/ResNeXt."""
    rows = [("backbone.conv1.weight", "backbone.body.stem.conv1.weight", (arch["stem"], 3, 7, 7))]
    rows += _bn_rows("backbone.bn1", "backbone.body.stem.bn1", arch["stem"])
    in_ch, groups = arch["stem"], arch["groups"]
    for s, count in enumerate(arch["blocks"], start=1):
        width, out, dcn = arch["width"] << (s - 1), arch["res2_out"] << (s - 1), arch["stage_dcn"][s - 1]
        for b in range(count):
            src, dst = "backbone.layer{}.{}".format(s, b), "backbone.body.layer{}.{}".format(s, b)
            rows.append((src + ".conv1.weight", dst + ".conv1.weight", (width, in_ch, 1, 1)))
            rows += _bn_rows(src + ".bn1", dst + ".bn1", width)
            rows += _conv_rows(src + ".conv2", dst + ".conv2", (width, width // groups, 3, 3), dcn,
                               arch["offset_channels"], width)
            rows += _bn_rows(src + ".bn2", dst + ".bn2", width)
            rows.append((src + ".conv3.weight", dst + ".conv3.weight", (out, width, 1, 1)))
            rows += _bn_rows(src + ".bn3", dst + ".bn3", out)
            if b == 0:
                rows.append((src + ".downsample.0.weight", dst + ".downsample.0.weight", (out, in_ch, 1, 1)))
                rows += _bn_rows(src + ".downsample.1", dst + ".downsample.1", out)
            in_ch = out
    return rows


def _neck_rows(arch):
    """(mmdetection key, our key, shape) for the FPN: laterals and outputs of C3..C5, then P6, P7."""
    c, rows = arch["channels"], []
    for i in range(3):
        for kind, ours, shape in (("lateral_convs", "fpn_inner", (c, arch["c3"] << i, 1, 1)),
                                  ("fpn_convs", "fpn_layer", (c, c, 3, 3))):
            src, dst = "neck.{}.{}.conv".format(kind, i), "backbone.fpn.{}{}".format(ours, i + 2)
            rows += [(src + ".weight", dst + ".weight", shape), (src + ".bias", dst + ".bias", (c,))]
    p6_in = arch["c3"] << 2 if arch["use_c5"] else c
    for i, name, in_ch in ((3, "p6", p6_in), (4, "p7", c)):
        src, dst = "neck.fpn_convs.{}.conv".format(i), "backbone.fpn.top_blocks." + name
        rows += [(src + ".weight", dst + ".weight", (c, in_ch, 3, 3)), (src + ".bias", dst + ".bias", (c,))]
    return rows


def _head_rows(arch):
    """(mmdetection key, our key, shape) for the head; tower conv biases are marked optional (filled)."""
    c, n, rows = arch["channels"], arch["num_convs"], []
    for src_tower, tower in (("cls_convs", "cls_tower"), ("reg_convs", "bbox_tower")):
        for i in range(n):
            src, dst = "bbox_head.{}.{}".format(src_tower, i), "rpn.head.{}.".format(tower)
            dcn = arch["head_dcn"] and i == n - 1
            conv = _conv_rows(src + ".conv", dst + str(3 * i), (c, c, 3, 3), dcn, 27, c, bias=True)
            rows += [row + (("optional",) if row[0].endswith("conv.bias") else ()) for row in conv]
            rows += [(src + ".gn." + p, dst + "{}.{}".format(3 * i + 1, p), (c,)) for p in ("weight", "bias")]
    for src, dst, out in (("cls", "cls_logits", arch["num_classes"]), ("reg", "bbox_pred", 4),
                          ("centerness", "centerness", 1)):
        src = "bbox_head.{}{}".format(arch["pred"], src)
        rows += [(src + ".weight", "rpn.head.{}.weight".format(dst), (out, c, 3, 3)),
                 (src + ".bias", "rpn.head.{}.bias".format(dst), (out,))]
    rows += [("bbox_head.scales.{}.scale".format(i), "rpn.head.scales.{}.scale".format(i), (1,))
             for i in range(len(_FPN_STRIDES))]
    return rows


def _take(state, rows, report):
    """Our state dict from ``rows``; refuses unknown, missing and misshapen tensors (ValueError)."""
    expected = OrderedDict((row[0], row) for row in rows)
    for key in state:
        if isinstance(key, str) and key.endswith(".num_batches_tracked"):
            report.dropped.append((key, "BatchNorm step counter: our FrozenBatchNorm2d has none"))
        elif key not in expected:
            close = difflib.get_close_matches(str(key), list(expected), n=1)
            raise ValueError("mmdetection FCOS checkpoint: unknown key {!r}{}; this converter maps ResNet/ResNeXt "
                             "+ FPN + FCOSHead only".format(key, " (closest known: {!r})".format(close[0])
                                                            if close else ""))
    out = OrderedDict()
    for src, dst, shape, *optional in expected.values():
        if src not in state:
            if not optional:
                raise ValueError("mmdetection FCOS checkpoint: missing key {!r} (for our {!r})".format(src, dst))
            out[dst] = torch.zeros(shape)
            report.filled.append((dst, "zeros: mmdetection's conv has no bias (GroupNorm follows)"))
            continue
        value = state[src]
        if dst.endswith(".scale") and value.numel() == 1:
            value = value.reshape(1)
        if tuple(value.shape) != tuple(shape):
            raise ValueError("mmdetection FCOS checkpoint: {!r} has shape {}, expected {} (for our {!r})".format(
                src, tuple(value.shape), tuple(shape), dst))
        out[dst] = value
        report.mapped.append((src, dst))
    return out


def _settings(meta, arch):
    """(MmdetSettings, a note saying where they come from): the zoo entry, the config text, the tensors."""
    meta = meta if isinstance(meta, dict) else {}
    entry = mmdet_zoo_entry(meta.get("zoo_name"))
    if entry is not None:
        return entry.settings, "settings: mmdetection's config {} (model zoo)".format(entry.name)
    guess = _settings_from_tensors(arch)
    text = meta.get("config", meta.get("cfg"))  # mmdetection 2.x writes "config", mmengine (3.x) "cfg"
    if isinstance(text, str) and text.strip():
        return _settings_from_text(text, guess), "settings: read from the mmdetection config text in the meta"
    return guess, ("settings guessed from the tensors (no zoo name, no config text): {} style, tricks {}, "
                   "as mmdetection's released models".format(guess.style, "on" if guess.norm_on_bbox else "off"))


def _settings_from_tensors(arch):
    """Released models: tower conv biases only in the tricks configs, ResNeXt only pytorch-style."""
    tricks, nms = arch["conv_bias"], 0.6 if arch["conv_bias"] else 0.5
    if arch["groups"] > 1:
        return MmdetSettings("pytorch", tricks, tricks, PYTORCH_RGB, nms)
    return MmdetSettings("caffe", tricks, tricks, DETECTRON2_CAFFE if tricks else DETECTRON_CAFFE, nms)


def _settings_from_text(text, default):
    """Settings from mmdetection's config text (``meta["config"]``); a setting not found keeps ``default``'s."""
    def find(pattern):
        match = re.search(pattern, text)
        return match.group(1) if match else None

    def flag(name, value):
        found = find(r"\b{}\s*=\s*(True|False)".format(name))
        return value if found is None else found == "True"

    def floats(name, value):
        found = find(r"\b{}\s*=\s*\[([^\]]*)\]".format(name))
        return value if found is None else tuple(float(v) for v in found.split(","))

    mean, std, to_rgb = default.normalize
    to_rgb = flag("bgr_to_rgb", flag("to_rgb", to_rgb))
    nms = find(r"\biou_thr(?:eshold)?\s*=\s*([0-9.]+)")
    return MmdetSettings(find(r"\bstyle\s*=\s*['\"](caffe|pytorch)['\"]") or default.style,
                         flag("norm_on_bbox", default.norm_on_bbox),
                         flag("centerness_on_reg", default.centerness_on_reg),
                         (floats("mean", mean), floats("std", std), to_rgb),
                         default.nms_iou if nms is None else float(nms))


def _normalisation(settings):
    """(TO_BGR255, PIXEL_MEAN, PIXEL_STD) of ours equal to mmdetection's Normalize: RGB 0-255 with
    (mean, std) is our RGB 0-1 with (mean / 255, std / 255)."""
    mean, std, to_rgb = settings.normalize
    if to_rgb:
        return False, [round(v / 255.0, 9) for v in mean], [round(v / 255.0, 9) for v in std]
    return True, list(mean), list(std)


def _required_config(arch, settings):
    """The config keys (and values) the converted weights need."""
    to_bgr255, mean, std = _normalisation(settings)
    offsets = arch["offset_channels"]
    modulated = offsets % 27 == 0
    dcn = [("MODEL.RESNETS.WITH_MODULATED_DCN", modulated),
           ("MODEL.RESNETS.DEFORMABLE_GROUPS", offsets // (27 if modulated else 18))] if offsets else []
    return OrderedDict([
        ("MODEL.BACKBONE.CONV_BODY", "R-{}-FPN-RETINANET".format(arch["depth"])),
        ("MODEL.RESNETS.NUM_GROUPS", arch["groups"]),
        ("MODEL.RESNETS.WIDTH_PER_GROUP", arch["width"] // arch["groups"]),
        ("MODEL.RESNETS.STRIDE_IN_1X1", settings.style == "caffe"),
        ("MODEL.RESNETS.BACKBONE_OUT_CHANNELS", arch["channels"]),
        ("MODEL.RESNETS.FROZEN_BN_EPS", 1e-5),  # torch.nn.BatchNorm2d's, which mmdetection's ResNet uses
        ("MODEL.RESNETS.STAGE_WITH_DCN", arch["stage_dcn"])] + dcn + [
        ("MODEL.RETINANET.USE_C5", arch["use_c5"]),
        ("MODEL.FCOS.NUM_CONVS", arch["num_convs"]),
        ("MODEL.FCOS.USE_DCN_IN_TOWER", arch["head_dcn"]),
        ("MODEL.FCOS.NORM_REG_TARGETS", settings.norm_on_bbox),
        ("MODEL.FCOS.CENTERNESS_ON_REG", settings.centerness_on_reg),
        ("MODEL.FCOS.FPN_STRIDES", list(_FPN_STRIDES)),
        ("MODEL.FCOS.CONVENTION", "original"),  # mmdetection's points are at (j*s + s//2, i*s + s//2) too
        ("INPUT.TO_BGR255", to_bgr255), ("INPUT.PIXEL_MEAN", mean), ("INPUT.PIXEL_STD", std)])


def _suggest(meta, arch, settings):
    """(our config for these weights, relative to configs/, or ""; notes)."""
    entry = mmdet_zoo_entry((meta or {}).get("zoo_name")) if isinstance(meta, dict) else None
    if entry is not None:
        return entry.config, []
    dcn = any(arch["stage_dcn"]) or arch["head_dcn"]
    for model in MMDET_MODELS.values():
        if (model.depth, model.groups, model.dcn, model.settings) == (arch["depth"], arch["groups"], dcn, settings):
            return model.config, ["config: that of mmdetection's {}, the released model with this architecture "
                                  "and these settings".format(model.name)]
    return "", ["config: none here has this architecture and these settings; start from a configs/mmdetection "
                "file and set the keys listed as needed"]


def _notes(arch, settings):
    to_bgr255, mean, std = _normalisation(settings)
    colour = "BGR 0-255" if to_bgr255 else "RGB 0-1 (mmdetection's RGB 0-255 mean and std divided by 255)"
    return [
        "classes: conv_cls channel k is our label k + 1 ({} classes, MODEL.FCOS.NUM_CLASSES {}), in the order of "
        "mmdetection's CLASSES (COCO: category ids ascending)".format(arch["num_classes"], arch["num_classes"] + 1),
        "input: {} minus {} divided by {}".format(colour, mean, std),
        "test settings: mmdetection's are score_thr 0.05, NMS IoU {} (the suggested config's MODEL.FCOS.NMS_TH), "
        "100 detections, score cls x centerness; ours reports sqrt(cls x centerness) (same ranking, same AP), "
        "uses pixel-inclusive boxes (+1 in NMS, clipped to W-1/H-1) and truncates resized sizes where "
        "mmdetection rounds: small differences, not measured".format(settings.nms_iou),
    ]
