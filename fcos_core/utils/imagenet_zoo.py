"""torchvision's ImageNet classifiers by name (``torchvision://resnet50``) and the settings they need.

``MODEL.WEIGHT torchvision://<model>`` resolves to torchvision's ``IMAGENET1K_V1`` file of that model
(:data:`TORCHVISION_IMAGENET`; addresses from torchvision 0.29.1's ``models/resnet.py`` and
``models/mobilenetv2.py``; their file names carry SHA-256 prefixes, which downloads are checked
against). The checkpointer then loads it into the backbone body as any torchvision classifier
(:func:`fcos_core.utils.c2_model_loading.convert_torchvision_state_dict`).

These weights were trained on RGB images scaled to 0-1 and normalised with ImageNet's mean and
std, and torchvision's ResNets put a bottleneck's stride on its 3x3 conv. A config that differs
(the original's configs: BGR 0-255 minus a mean, stride on the 1x1 conv, for the MSRA Caffe2
weights) would start from weights that do not fit its input, silently: :func:`check_imagenet_config`
refuses it, naming each key, its value and the needed one.
"""
from dataclasses import dataclass, field

from fcos_core.utils.formats.report import config_mismatches
from fcos_core.utils.weight_cache import url_filename

TORCHVISION_PREFIX = "torchvision://"
_TORCHVISION_MODELS = "https://download.pytorch.org/models/"

# what torchvision's ImageNet weights expect of the input (torchvision's ImageClassification transform)
RGB_IMAGENET_INPUT = {
    "INPUT.TO_BGR255": False,
    "INPUT.PIXEL_MEAN": [0.485, 0.456, 0.406],
    "INPUT.PIXEL_STD": [0.229, 0.224, 0.225],
}


@dataclass(frozen=True)
class ImageNetWeights:
    """torchvision ImageNet weights for a backbone body.

    Attributes:
        name: torchvision's model name (``resnet50``), the part after ``torchvision://``.
        url: the ``IMAGENET1K_V1`` file (``<name>-<sha256 prefix>.pth``).
        body: the start of the MODEL.BACKBONE.CONV_BODY values they fit (``"R-50-"``).
        required_config: dotted config keys -> the values the weights need.
        catalog: the Detectron ``catalog://`` weights of the same backbone, for configs with the
            original's settings ("" when there are none).
    """

    name: str
    url: str
    body: str
    required_config: dict = field(default_factory=dict)
    catalog: str = ""

    @property
    def filename(self):
        return url_filename(self.url)


def _resnet(name, file, body, groups, width, catalog):
    required = {"MODEL.RESNETS.STRIDE_IN_1X1": False, **RGB_IMAGENET_INPUT,
                "MODEL.RESNETS.NUM_GROUPS": groups, "MODEL.RESNETS.WIDTH_PER_GROUP": width}
    return ImageNetWeights(name, _TORCHVISION_MODELS + file, body, required, "catalog://ImageNetPretrained/" + catalog)


TORCHVISION_IMAGENET = {
    w.name: w for w in [
        _resnet("resnet50", "resnet50-0676ba61.pth", "R-50-", 1, 64, "MSRA/R-50"),
        _resnet("resnet101", "resnet101-63fe2227.pth", "R-101-", 1, 64, "MSRA/R-101"),
        _resnet("resnext101_32x8d", "resnext101_32x8d-8ba56ff5.pth", "R-101-", 32, 8, "FAIR/20171220/X-101-32x8d"),
        _resnet("resnext101_64x4d", "resnext101_64x4d-173b62eb.pth", "R-101-", 64, 4, "FAIR/20171220/X-101-64x4d"),
        ImageNetWeights("mobilenet_v2", _TORCHVISION_MODELS + "mobilenet_v2-b0353104.pth", "MNV2-",
                        dict(RGB_IMAGENET_INPUT)),
    ]
}


def torchvision_imagenet_url(weight):
    """The download address of ``torchvision://<model>`` (any case).

    Raises:
        ValueError: an unknown model; the message lists the known names.
    """
    name = weight[len(TORCHVISION_PREFIX):] if weight.startswith(TORCHVISION_PREFIX) else weight
    for key, weights in TORCHVISION_IMAGENET.items():
        if key == name.lower():
            return weights.url
    known = ", ".join(TORCHVISION_PREFIX + k for k in TORCHVISION_IMAGENET)
    raise ValueError(f"{weight!r}: no torchvision ImageNet weights of that name; known: {known}")


def imagenet_requirements(weight):
    """The :class:`ImageNetWeights` that ``weight`` names: a ``torchvision://`` name, or a path or URL
    whose file name is one of torchvision's ImageNet files (``.../resnet50-0676ba61.pth``); else None."""
    weight = str(weight)
    if weight.startswith(TORCHVISION_PREFIX):
        torchvision_imagenet_url(weight)  # raises ValueError for an unknown name
        return TORCHVISION_IMAGENET[weight[len(TORCHVISION_PREFIX):].lower()]
    filename = url_filename(weight) if "://" in weight else weight.replace("\\", "/").rsplit("/", 1)[-1]
    for weights in TORCHVISION_IMAGENET.values():
        if weights.filename == filename:
            return weights
    return None


def check_imagenet_config(cfg, weight):
    """Refuse a config that torchvision ImageNet weights ``weight`` do not fit (no-op for other weights).

    Args:
        cfg: the config the backbone is built from.
        weight (str): MODEL.WEIGHT (a ``torchvision://`` name, path, URL or anything else).

    Raises:
        ValueError: naming every key whose value differs (MODEL.BACKBONE.CONV_BODY,
            MODEL.RESNETS.STRIDE_IN_1X1 / NUM_GROUPS / WIDTH_PER_GROUP, INPUT.TO_BGR255 / PIXEL_MEAN /
            PIXEL_STD), its value and the needed one, and the alternatives.
    """
    weights = imagenet_requirements(weight)
    if weights is None:
        return
    problems = []
    body = cfg.MODEL.BACKBONE.CONV_BODY
    if not body.startswith(weights.body):
        problems.append(f"MODEL.BACKBONE.CONV_BODY is {body!r}; these weights fit {weights.body}* bodies")
    for key, have, want in config_mismatches(cfg, weights.required_config):
        problems.append(f"{key} is {_show(have)}; they need {_show(want)}")
    if not problems:
        return
    alternative = (f" To keep the config's settings, use {weights.catalog} (Detectron's weights, "
                   f"made for them) instead." if weights.catalog else "")
    raise ValueError(
        f"MODEL.WEIGHT {weight} ({weights.filename}, torchvision's ImageNet {weights.name}) does not fit the "
        f"config:\n  " + "\n  ".join(problems) +
        f"\nSet these keys (MODEL_ZOO.md, 'ImageNet initialisations', lists them per config).{alternative}")


def _show(value):
    return str(list(value)) if isinstance(value, (list, tuple)) else repr(value)
