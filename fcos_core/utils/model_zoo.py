"""Weight files by path, URL or model-zoo name, downloaded into the torch hub cache.

``MODEL.WEIGHT`` (and ``fcos --weights``) accepts a path, an ``http(s)://`` or ``file://`` URL, or
the name of a released model of the original FCOS model zoo (:data:`MODEL_ZOO`, names as in
MODEL_ZOO.md, any case, ``.pth`` optional: ``fcos_imprv_R_50_FPN_1x``). Downloads go to
``$TORCH_HOME/hub/checkpoints`` with a progress bar on a terminal; a download whose SHA-256 does
not match the expected one is removed and reported. The expected checksum comes from
:data:`KNOWN_SHA256` (by file name) or, as torch hub does, from a hex prefix at the end of the file
name (``name-<sha256 prefix>.pth``). Offline, the error names the URL and the path to put the file
at by hand.
"""
import difflib
import hashlib
import logging
import os
import re
import sys
from urllib.parse import urlparse

import torch

# Released models of the original FCOS (tianzhi0549/FCOS README, see MODEL_ZOO.md): name -> the
# download address. The "#<file>.pth" fragment names the cached file, as in the original links.
# These addresses were not reachable from where this table was written; they may have moved.
_CLOUDSTOR = "https://cloudstor.aarnet.edu.au/plus/s/{}/download#{}.pth"
MODEL_ZOO = {
    name: _CLOUDSTOR.format(share, name)
    for name, share in [
        ("FCOS_R_50_FPN_1x", "dDeDPBLEAt19Xrl"),
        ("FCOS_R_101_FPN_2x", "vjL3L0AW7vnhRTo"),
        ("FCOS_X_101_32x8d_FPN_2x", "U5myBfGF7MviZ97"),
        ("FCOS_X_101_64x4d_FPN_2x", "wpwoCi4S8iajFi9"),
        ("FCOS_imprv_R_50_FPN_1x", "ZSAqNJB96hA71Yf"),
        ("FCOS_imprv_R_101_FPN_2x", "hTeMuRa4pwtCemq"),
        ("FCOS_imprv_X_101_32x8d_FPN_2x", "WZ0i7RZW5BRpJu6"),
        ("FCOS_imprv_X_101_64x4d_FPN_2x", "rKOJtwvJwcKVOz8"),
        ("FCOS_imprv_dcnv2_R_50_FPN_1x", "plKgHuykjiilzWr"),
        ("FCOS_imprv_dcnv2_R_101_FPN_2x", "xq2Ll7s0hpaQycO"),
        ("FCOS_imprv_dcnv2_X_101_32x8d_FPN_2x", "08UK0OP67TogLCU"),
        ("FCOS_imprv_dcnv2_X_101_64x4d_FPN_2x", "jdtVmG7MlugEXB7"),
        ("FCOS_syncbn_bs32_c128_MNV2_FPN_1x", "3GKwaxZhDSOlCZ0"),
        ("FCOS_syncbn_bs32_MNV2_FPN_1x", "OpJtCJLj104i2Yc"),
        ("FCOS_bn_bs16_MNV2_FPN_1x", "B6BrLAiAEAYQkcy"),
    ]
}

# Expected SHA-256 (hex) of downloaded files, by cached file name. Empty: the original does not
# publish checksums and the files could not be downloaded here to compute them, so released files
# are not checked until someone who has them adds their sums here.
KNOWN_SHA256 = {}

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")  # torch hub: "resnet18-f37072fd.pth"


def model_zoo_name(name):
    """The MODEL_ZOO key for ``name`` (any case, ``.pth`` optional), or None."""
    stem = name[:-4] if name.lower().endswith(".pth") else name
    for key in MODEL_ZOO:
        if key.lower() == stem.lower():
            return key
    return None


def model_zoo_url(name):
    """The download address of a model-zoo name.

    Raises:
        KeyError: not a model-zoo name; the message lists the closest names.
    """
    key = model_zoo_name(name)
    if key is None:
        close = difflib.get_close_matches(name, list(MODEL_ZOO), n=3, cutoff=0.5)
        hint = "did you mean {}? ".format(" or ".join(close)) if close else ""
        raise KeyError(f"{name!r} is not a model-zoo name; {hint}known: {', '.join(MODEL_ZOO)}")
    return MODEL_ZOO[key]


# configs/ of the source tree, shipped in the package through the fcos_core/configs link
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def model_zoo_config(name):
    """The config of a model-zoo name, relative to configs/ ("fcos/fcos_imprv_R_50_FPN_1x.yaml")."""
    key = model_zoo_name(name)
    if key is None:
        model_zoo_url(name)  # raises KeyError with the closest names
    return "fcos/fcos" + key[len("FCOS"):] + ".yaml"


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


def resolve_weight(weight):
    """A local file for ``weight``: a path (returned as is), a URL or a model-zoo name (cached).

    Raises:
        FileNotFoundError: offline / failed download, naming the URL and where to put the file; or
            no such file and ``weight`` is close to a model-zoo name (the message suggests it).
        RuntimeError: the downloaded file does not match its checksum (it has been removed).
    """
    weight = str(weight)
    if weight.startswith(("http://", "https://", "file://")):
        return cache_url(weight)
    if os.path.exists(weight):
        return weight
    if model_zoo_name(weight) is not None:
        return cache_url(model_zoo_url(weight))
    lowered = {name.lower(): name for name in MODEL_ZOO}
    close = difflib.get_close_matches(weight.lower(), list(lowered), n=3, cutoff=0.8)
    if close:  # a mistyped model-zoo name rather than a missing file
        raise FileNotFoundError(f"{weight!r} is neither a file nor a model-zoo name; did you mean "
                                f"{' or '.join(lowered[c] for c in close)}?")
    return weight


def cache_dir():

    """Where downloaded weights live: ``$TORCH_HOME/hub/checkpoints`` (torch's own cache)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def url_filename(url):
    """The file name a URL is cached under (the fragment after ``#`` wins, as in the original)."""
    parsed = urlparse(url)
    if parsed.fragment:
        return os.path.basename(parsed.fragment)
    return os.path.basename(parsed.path)


def expected_sha256(filename):
    """The expected SHA-256 of a cached file (full hex or a prefix), or None when unknown."""
    if filename in KNOWN_SHA256:
        return KNOWN_SHA256[filename].lower()
    match = _HASH_IN_NAME.search(filename)
    return match.group(1) if match else None


def sha256_of(path, chunk=1 << 20):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_url(url, model_dir=None, progress=True):
    """Path of the cached copy of ``url``, downloading it first if needed.

    The file is checked against :func:`expected_sha256` when that is known, after a download and
    each time a cached copy is used; a cached copy that fails is removed and downloaded again.

    Raises:
        FileNotFoundError: the download failed (no network, say); the message names the URL
            and the exact path to put the file at by hand.
        RuntimeError: the downloaded file does not match its checksum; it has been removed.
    """
    model_dir = model_dir or cache_dir()
    os.makedirs(model_dir, exist_ok=True)
    filename = url_filename(url)
    if not filename:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    cached = os.path.join(model_dir, filename)
    expected = expected_sha256(filename)
    logger = logging.getLogger(__name__)
    if os.path.exists(cached):
        if expected is None or sha256_of(cached).startswith(expected):
            return cached
        logger.warning("%s does not match its SHA-256 %s: removing it and downloading it again", cached, expected)
        os.remove(cached)
    logger.info("downloading %s to %s", url, cached)
    try:
        # writes a temporary file in model_dir and moves it to ``cached`` when complete
        torch.hub.download_url_to_file(url, cached, progress=progress and sys.stderr.isatty())
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError...)
        if os.path.exists(cached):
            os.remove(cached)
        raise FileNotFoundError(
            f"could not download {url} ({type(exc).__name__}: {exc}). If this machine is offline, "
            f"download the file elsewhere and put it at {cached}"
        ) from exc
    if expected is not None:
        got = sha256_of(cached)
        if not got.startswith(expected):
            os.remove(cached)
            raise RuntimeError(
                f"the file downloaded from {url} is corrupted: SHA-256 {got}, expected {expected}. "
                f"It has been removed; try again, or put a good copy at {cached}"
            )
    return cached
