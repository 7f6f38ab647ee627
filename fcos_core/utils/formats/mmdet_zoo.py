"""mmdetection's released FCOS models (its configs/fcos/metafile.yml and README): names, files, settings.

Each :class:`MmdetModel` is one published checkpoint. ``name`` is mmdetection's v2 config name, which
is also the file's stem (``<name>-<sha256 prefix>.pth``); ``v3_name`` is the name its 3.x metafile gives
the same file. The box AP is mmdetection's published COCO val2017 figure, not measured here. ``config``
is our config for the file (relative to ``configs/``); ``based_on`` the original-FCOS config it differs
from. The remaining fields are the settings of mmdetection's config that the weights need (see
:func:`fcos_core.utils.formats.mmdet.mmdet_fcos_to_detector`).
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Tuple

_HOST = "https://download.openmmlab.com/mmdetection/v2.0/fcos/{0}/{0}-{1}.pth"

# Input normalisation of mmdetection's configs (Normalize / DetDataPreprocessor): (mean, std, to_rgb)
# in 0-255 units, BGR unless to_rgb.
DETECTRON_CAFFE = ((102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0), False)  # open-mmlab://detectron/*
DETECTRON2_CAFFE = ((103.530, 116.280, 123.675), (1.0, 1.0, 1.0), False)  # open-mmlab://detectron2/*
PYTORCH_RGB = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), True)  # torchvision-style ImageNet


@dataclass(frozen=True)
class MmdetSettings:
    """What an mmdetection FCOS config sets that the weights need and the tensors do not show.

    style: "caffe" (stride in the 1x1 conv of a bottleneck) or "pytorch" (in the 3x3 conv).
    norm_on_bbox, centerness_on_reg: FCOSHead's flags (both True in the "center-normbbox-centeronreg-giou"
        configs, with center sampling and GIoU, which only training uses).
    normalize: (mean, std, to_rgb), 0-255 units, as :data:`DETECTRON_CAFFE`.
    nms_iou: test_cfg's NMS IoU threshold.
    """

    style: str
    norm_on_bbox: bool
    centerness_on_reg: bool
    normalize: Tuple[Tuple[float, ...], Tuple[float, ...], bool]
    nms_iou: float


@dataclass(frozen=True)
class MmdetModel:
    """One released mmdetection FCOS checkpoint (see the module docstring); ``depth``, ``groups`` and
    ``dcn`` (DCNv2 in res3-res5 and the towers' last convs) describe its backbone and head."""

    name: str
    v3_name: str
    sha256_prefix: str
    box_ap: float
    config: str
    based_on: str
    settings: MmdetSettings
    depth: int = 50
    groups: int = 1
    dcn: bool = False

    @property
    def url(self):
        """The download address (mmdetection's metafile), ending in ``<name>-<sha256 prefix>.pth``."""
        return _HOST.format(self.name, self.sha256_prefix)

    @property
    def filename(self):
        """The file's name, ``<name>-<sha256 prefix>.pth`` (torch hub checks the prefix)."""
        return "{}-{}.pth".format(self.name, self.sha256_prefix)


_BASIC = MmdetSettings("caffe", False, False, DETECTRON_CAFFE, 0.5)
_TRICKS = MmdetSettings("caffe", True, True, DETECTRON2_CAFFE, 0.6)
_X101 = MmdetSettings("pytorch", False, False, PYTORCH_RGB, 0.5)

MMDET_MODELS = OrderedDict((m.name, m) for m in [
    MmdetModel("fcos_r50_caffe_fpn_gn-head_1x_coco", "fcos_r50-caffe_fpn_gn-head_1x_coco",
               "821213aa", 36.6, "mmdetection/fcos_r50_caffe_fpn_gn-head_1x_coco.yaml",
               "fcos/fcos_R_50_FPN_1x.yaml", _BASIC),
    MmdetModel("fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco",
               "fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco",
               "0a0d75a8", 38.7, "mmdetection/fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_1x_coco.yaml",
               "fcos/fcos_imprv_R_50_FPN_1x.yaml", _TRICKS),
    MmdetModel("fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_dcn_1x_coco",
               "fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco",
               "ae4d8b3d", 42.3,
               "mmdetection/fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_dcn_1x_coco.yaml",
               "fcos/fcos_imprv_dcnv2_R_50_FPN_1x.yaml", _TRICKS, dcn=True),
    MmdetModel("fcos_r101_caffe_fpn_gn-head_1x_coco", "fcos_r101-caffe_fpn_gn-head-1x_coco",
               "0e37b982", 39.1, "mmdetection/fcos_r101_caffe_fpn_gn-head_1x_coco.yaml",
               "fcos/fcos_R_101_FPN_2x.yaml", _BASIC, depth=101),
    MmdetModel("fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco", "fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco",
               "d92ceeea", 38.5, "mmdetection/fcos_r50_caffe_fpn_gn-head_mstrain_640-800_2x_coco.yaml",
               "fcos/fcos_R_50_FPN_1x.yaml", _BASIC),
    MmdetModel("fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco",
               "fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco",
               "511424d6", 40.8, "mmdetection/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco.yaml",
               "fcos/fcos_R_101_FPN_2x.yaml", _BASIC, depth=101),
    MmdetModel("fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco",
               "fcos_x101-64x4d_fpn_gn-head_ms-640-800-2x_coco",
               "ede514a8", 42.6, "mmdetection/fcos_x101_64x4d_fpn_gn-head_mstrain_640-800_2x_coco.yaml",
               "fcos/fcos_X_101_64x4d_FPN_2x.yaml", _X101, depth=101, groups=64),
])


def mmdet_zoo_entry(name) -> Optional[MmdetModel]:
    """The :class:`MmdetModel` for a v2 or v3 config name or a file name (``<name>-<hash>.pth``, a
    path or URL ending in one), any case; None when it is none of mmdetection's FCOS releases."""
    if not name:
        return None
    text = str(name).rsplit("/", 1)[-1].lower()
    for model in MMDET_MODELS.values():
        if text in (model.name.lower(), model.v3_name.lower(), model.filename.lower()):
            return model
    return None
