"""Weight files by path, URL, model-zoo name or ``torchvision://`` ImageNet name.

``MODEL.WEIGHT`` (and ``fcos --weights``) accepts:

* a path; a file whose name is that of a zoo or torchvision file with a published hash
  (``fcos_resnet50_fpn_coco-99b0c9b7.pth``, ``resnet50-0676ba61.pth``) must match it
  (:class:`HashMismatchError` otherwise, naming its SHA-256, the expected prefix and the path);
* an ``http(s)://`` or ``file://`` URL, downloaded into the torch hub cache and checked
  (:func:`fcos_core.utils.weight_cache.cache_url`);
* a model-zoo name (:func:`zoo`, any case, ``.pth`` optional; the file name works too): the weights
  and the config they run with (:func:`model_zoo_config`), with where they come from and what AP
  was published for them, by whom (:class:`ZooEntry`). Today's downloads are torchvision's COCO FCOS
  and mmdetection's FCOS checkpoints; the original's models are listed with their host gone
  (AARNet CloudStor, decommissioned on 15 December 2023) and load from a local copy;
* ``torchvision://<model>``: torchvision's ImageNet classifier weights (IMAGENET1K_V1) for
  initialising a backbone (:data:`TORCHVISION_IMAGENET`); the settings they need are checked
  against the config by :func:`check_imagenet_config`.

Everything about downloading, caching, checksums and first-use pins is in
:mod:`fcos_core.utils.weight_cache` (re-exported here).
"""
import difflib
import functools
import os
from dataclasses import dataclass

from fcos_core.utils.formats.mmdet_zoo import MMDET_MODELS
from fcos_core.utils.imagenet_zoo import (  # noqa: F401  (re-exported)
    TORCHVISION_IMAGENET,
    TORCHVISION_PREFIX,
    check_imagenet_config,
    imagenet_requirements,
    torchvision_imagenet_url,
)
from fcos_core.utils.weight_cache import (  # noqa: F401  (re-exported: the API of this module before the split)
    GONE_HOSTS,
    KNOWN_SHA256,
    PIN_SUFFIX,
    HashMismatchError,
    cache_dir,
    cache_url,
    check_weight_file,
    expected_sha256,
    hash_mismatch,
    read_pin,
    sha256_of,
    url_filename,
    write_pin,
)


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable (or once downloadable) detector.

    Attributes:
        name: the model-zoo name (``fcos_resnet50_fpn_coco``).
        url: where the file is (``#<file name>`` fragments name the cached file).
        config: the config it runs with, relative to configs/.
        source: "torchvision", "mmdetection" or "original (host gone)".
        ap: published COCO box AP (0-100), or None when none was published.
        ap_source: which split, and who published the figure where. No figure here was measured
            in this project.
        sha256: the published SHA-256 (a prefix: the ``-<hex>`` of torch hub style file names), or
            "" when none is published (the download is then pinned on first use).
        aliases: other names of the same file (mmdetection 3.x's names of its 2.x files).
    """

    name: str
    url: str
    config: str
    source: str
    ap: float = None
    ap_source: str = ""
    sha256: str = ""
    aliases: tuple = ()

    @property
    def filename(self):
        """The file name in the cache (``fcos_resnet50_fpn_coco-99b0c9b7.pth``)."""
        return url_filename(self.url)

    @property
    def host_gone(self):
        """True when the URL's host no longer serves files (:data:`GONE_HOSTS`)."""
        return any(f"://{host}/" in self.url for host in GONE_HOSTS)


TORCHVISION_FCOS = ZooEntry(
    name="fcos_resnet50_fpn_coco",
    # torchvision 0.29.1, models/detection/fcos.py, FCOS_ResNet50_FPN_Weights.COCO_V1
    url="https://download.pytorch.org/models/fcos_resnet50_fpn_coco-99b0c9b7.pth",
    config="torchvision/fcos_resnet50_fpn_coco.yaml",
    source="torchvision",
    ap=39.2,
    ap_source="COCO val2017, published by torchvision (FCOS_ResNet50_FPN_Weights.COCO_V1 metadata); not measured here",
    sha256="99b0c9b7",
)

# The original FCOS README (tianzhi0549/FCOS at 410a8b882fe4bb44029210c67691dd6ce93fd943): name, the
# CloudStor share, AP on coco_2014_minival. Their host was decommissioned on 15 December 2023.
_ORIGINAL_SOURCE = "coco_2014_minival, published by the original FCOS README (tianzhi0549/FCOS@410a8b8); not measured here"
_CLOUDSTOR = "https://cloudstor.aarnet.edu.au/plus/s/{}/download#{}.pth"
_ORIGINAL = [
    ("FCOS_R_50_FPN_1x", "dDeDPBLEAt19Xrl", 37.1),
    ("FCOS_R_101_FPN_2x", "vjL3L0AW7vnhRTo", 41.4),
    ("FCOS_X_101_32x8d_FPN_2x", "U5myBfGF7MviZ97", 42.5),
    ("FCOS_X_101_64x4d_FPN_2x", "wpwoCi4S8iajFi9", 43.0),
    ("FCOS_imprv_R_50_FPN_1x", "ZSAqNJB96hA71Yf", 38.7),
    ("FCOS_imprv_R_101_FPN_2x", "hTeMuRa4pwtCemq", 43.0),
    ("FCOS_imprv_X_101_32x8d_FPN_2x", "WZ0i7RZW5BRpJu6", 44.0),
    ("FCOS_imprv_X_101_64x4d_FPN_2x", "rKOJtwvJwcKVOz8", 44.7),
    ("FCOS_imprv_dcnv2_R_50_FPN_1x", "plKgHuykjiilzWr", 42.3),
    ("FCOS_imprv_dcnv2_R_101_FPN_2x", "xq2Ll7s0hpaQycO", 45.6),
    ("FCOS_imprv_dcnv2_X_101_32x8d_FPN_2x", "08UK0OP67TogLCU", 46.4),
    ("FCOS_imprv_dcnv2_X_101_64x4d_FPN_2x", "jdtVmG7MlugEXB7", 46.6),
    ("FCOS_syncbn_bs32_c128_MNV2_FPN_1x", "3GKwaxZhDSOlCZ0", 30.9),
    ("FCOS_syncbn_bs32_MNV2_FPN_1x", "OpJtCJLj104i2Yc", 33.1),
    ("FCOS_bn_bs16_MNV2_FPN_1x", "B6BrLAiAEAYQkcy", 31.0),
]
ORIGINAL_MODELS = [
    ZooEntry(name, _CLOUDSTOR.format(share, name), "fcos/fcos" + name[len("FCOS"):] + ".yaml",
             "original (host gone)", ap, _ORIGINAL_SOURCE)
    for name, share, ap in _ORIGINAL
]


_MMDET_SOURCE = ("COCO val2017, published by mmdetection (its configs/fcos README and metafile.yml); "
                 "not measured here")


def _mmdet_entries():
    """Entries for mmdetection's FCOS checkpoints, read from
    :data:`fcos_core.utils.formats.mmdet_zoo.MMDET_MODELS` (name, URL, hash prefix, AP, our config)."""
    return [
        ZooEntry(name=m.name, url=m.url, config=m.config, source="mmdetection", ap=m.box_ap,
                 ap_source=_MMDET_SOURCE, sha256=m.sha256_prefix, aliases=(m.v3_name,))
        for m in MMDET_MODELS.values()
    ]


@functools.lru_cache(maxsize=None)
def zoo():
    """Every model-zoo entry by name: downloadable ones first (torchvision, mmdetection), then the
    original's. Returns a dict name -> :class:`ZooEntry` (do not modify it)."""
    entries = [TORCHVISION_FCOS, *_mmdet_entries(), *ORIGINAL_MODELS]
    return {entry.name: entry for entry in entries}


def model_zoo_name(name):
    """The zoo name for ``name`` (any case, ``.pth`` optional; or the entry's file name or an alias), or None."""
    stem = name[:-4] if name.lower().endswith(".pth") else name
    for key, entry in zoo().items():
        names = (key, os.path.splitext(entry.filename)[0], *entry.aliases)
        if stem.lower() in (n.lower() for n in names):
            return key
    return None


def model_zoo_entry(name):
    """The :class:`ZooEntry` of a model-zoo name.

    Raises:
        KeyError: not a model-zoo name; the message lists the closest names and every name.
    """
    key = model_zoo_name(name)
    if key is None:
        close = difflib.get_close_matches(name, list(zoo()), n=3, cutoff=0.5)
        hint = "did you mean {}? ".format(" or ".join(close)) if close else ""
        raise KeyError(f"{name!r} is not a model-zoo name; {hint}known: {', '.join(zoo())}")
    return zoo()[key]


def model_zoo_url(name):
    """The download address of a model-zoo name (KeyError for other names)."""
    return model_zoo_entry(name).url


def model_zoo_config(name):
    """The config a model-zoo name runs with, relative to configs/ (KeyError for other names)."""
    return model_zoo_entry(name).config


# configs/ of the source tree, shipped in the package through the fcos_core/configs link
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config_file(path):
    """A config file: ``path`` itself if it exists, else ``path`` under the packaged configs/
    (``"fcos/fcos_imprv_R_50_FPN_1x.yaml"`` works after ``pip install .`` from any folder).

    Raises:
        FileNotFoundError: in neither place.
    """
    if os.path.isfile(path):
        return path
    packaged = os.path.join(CONFIGS_DIR, path)
    if os.path.isfile(packaged):
        return packaged
    raise FileNotFoundError(f"config file not found: {path} (nor {packaged})")


def published_sha256(filename):
    """The published SHA-256 prefix of a zoo or torchvision ImageNet file name, else None.

    Only these names count: a file of one's own whose name ends in digits is not taken for a hash.
    """
    for entry in zoo().values():
        if entry.sha256 and entry.filename == filename:
            return entry.sha256
    for weights in TORCHVISION_IMAGENET.values():
        if url_filename(weights.url) == filename:
            return expected_sha256(filename)
    return None


def check_local_file(path):
    """Refuse a local file named as a published zoo / torchvision file whose SHA-256 differs.

    Raises:
        HashMismatchError: naming the file's SHA-256, the expected prefix and the path.
    """
    expected = published_sha256(os.path.basename(path))
    if expected is None or not os.path.isfile(path):
        return
    got = sha256_of(path)
    if not got.startswith(expected):
        raise HashMismatchError(hash_mismatch(path, got, expected))


def _fetch(entry):
    """The cached copy of a zoo entry's file (downloaded and checked if needed)."""
    cached = os.path.join(cache_dir(), entry.filename)
    if entry.host_gone and not os.path.exists(cached):
        downloadable = ", ".join(e.name for e in zoo().values() if not e.host_gone)
        raise FileNotFoundError(
            f"{entry.name} is one of the original FCOS models; their host ({entry.url.split('/')[2]}, AARNet "
            f"CloudStor) was decommissioned on 15 December 2023, so it cannot be downloaded. If you have a copy, "
            f"pass its path (MODEL.WEIGHT /path/{entry.filename}) or put it at {cached}. Models that can be "
            f"downloaded today: {downloadable} (MODEL_ZOO.md)")
    return cache_url(entry.url, sha256=entry.sha256 or None)


def resolve_weight(weight):
    """A local file for ``weight``: a path, a URL, a model-zoo name or a ``torchvision://`` name.

    Returns the path (a path that does not exist is returned as it is: the loader reports it).

    Raises:
        FileNotFoundError: offline / failed download or a host that is gone, naming the URL and
            where to put the file; or no such file and ``weight`` is close to a model-zoo name.
        HashMismatchError: the file does not match its published SHA-256 (a download is removed; a
            file given by path is left where it is and not loaded).
        ValueError: an unknown ``torchvision://`` name.
    """
    weight = str(weight)
    if weight.startswith(TORCHVISION_PREFIX):
        return cache_url(torchvision_imagenet_url(weight))
    if weight.startswith(("http://", "https://", "file://")):
        return cache_url(weight)
    if os.path.exists(weight):
        check_local_file(weight)
        return weight
    if model_zoo_name(weight) is not None:
        return _fetch(model_zoo_entry(weight))
    lowered = {name.lower(): name for name in zoo()}
    close = difflib.get_close_matches(weight.lower(), list(lowered), n=3, cutoff=0.8)
    if close:  # a mistyped model-zoo name rather than a missing file
        raise FileNotFoundError(f"{weight!r} is neither a file nor a model-zoo name; did you mean "
                                f"{' or '.join(lowered[c] for c in close)}?")
    return weight
