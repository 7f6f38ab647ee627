"""Weight files by path, URL or model-zoo name, downloaded into the torch hub cache.

``MODEL.WEIGHT`` (and ``fcos --weights``) accepts a path, an ``http(s)://`` or ``file://`` URL, or
the name of a released model of the original FCOS model zoo (:data:`MODEL_ZOO`, names as in
MODEL_ZOO.md, any case, ``.pth`` optional: ``fcos_imprv_R_50_FPN_1x``). Downloads go to
``$TORCH_HOME/hub/checkpoints`` with a progress bar on a terminal. A download is written to a
temporary file in that folder and checked before it takes its name there; one that fails is removed
and reported (a :class:`RuntimeError` naming the URL and the path):

* **Known SHA-256**: from :data:`KNOWN_SHA256` (by file name) or, as torch hub does, from a hex
  prefix at the end of the file name (``name-<sha256 prefix>.pth``). The file must match it, after a
  download and each time a cached copy is used (a cached copy that does not is downloaded again).
* **Unknown SHA-256** (the released FCOS files today: the original published no sums): the download
  must be a complete file of a format the checkpointer reads (:func:`check_weight_file`): a zip-format
  PyTorch checkpoint (every member's CRC checked), a legacy (pre-1.6) PyTorch checkpoint (its pickles
  parsed and the file loaded with ``weights_only=True``), or a pickle such as a Detectron ``.pkl``
  (parsed to its end). No code from the file is run. Its SHA-256 is then pinned, trust on first use,
  in ``<file>.sha256`` next to it (``sha256sum -c`` format); a cached copy that no longer matches its
  pin is removed, with the pin, and downloaded again. A file put in the cache by hand has no pin and is
  used as it is; to replace a downloaded file by hand, delete its ``.sha256`` too.

Full sums of released files belong in :data:`KNOWN_SHA256`, added by someone who has the files.
Offline, the error names the URL and the path to put the file at by hand.
"""
import difflib
import hashlib
import logging
import os
import pickle
import pickletools
import re
import sys
import uuid
import zipfile
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
# publish checksums and the files could not be downloaded here to compute them. Until someone who
# has the released files adds their sums here, a download of one is checked structurally
# (check_weight_file) and its sum pinned on first use (a "<file>.sha256" next to it).
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


PIN_SUFFIX = ".sha256"


def read_pin(path):
    """The SHA-256 pinned for ``path`` on its first download (its ``.sha256`` file), or None."""
    try:
        with open(path + PIN_SUFFIX) as f:
            text = f.read().split()
    except FileNotFoundError:
        return None
    return text[0].lower() if text else ""  # an empty pin matches nothing


def write_pin(path, digest):
    """Pin ``digest`` for ``path``: ``<path>.sha256`` in ``sha256sum`` format, written atomically."""
    tmp = f"{path}{PIN_SUFFIX}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{digest}  {os.path.basename(path)}\n")
    os.replace(tmp, path + PIN_SUFFIX)


def _remove(*paths):
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Reads pickles of plain values only: no global can be looked up, so nothing can be called."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"global {module}.{name}")


_TORCH_MAGIC = getattr(torch.serialization, "MAGIC_NUMBER", 0x1950A86A20F9469CFC6C)
_LEGACY_PICKLES = 5  # magic number, protocol version, sys info, the object, the storage keys


def _walk_pickle(f, size):
    """Parse one pickle from ``f`` up to its STOP opcode without running it (pickletools).

    Returns None, or what is wrong with it ("truncated: ..." when it runs into the end of the file).
    """
    try:
        for _ in pickletools.genops(f):
            pass
    except Exception as exc:  # pickletools reports unknown opcodes and short reads as ValueError
        return f"{'truncated' if f.tell() >= size else 'corrupted'}: {type(exc).__name__}: {exc}"
    return None


def _check_zip(path):
    try:
        archive = zipfile.ZipFile(path)  # reads the central directory, at the end of the file
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"truncated: a zip archive without its end ({type(exc).__name__}: {exc})"
    try:
        with archive:
            names = archive.namelist()
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except Exception as exc:  # a damaged local header or compressed stream
        return f"corrupted zip archive ({type(exc).__name__}: {exc})"
    if bad is not None:
        return f"corrupted: the zip member {bad} fails its CRC check"
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "not a PyTorch checkpoint: a zip archive without data.pkl"
    return None


def _check_legacy(path, size):
    # Loading with weights_only=True rebuilds tensors and plain containers only and runs no code from
    # the file; it reads every pickle and every tensor's bytes, so a short file fails. Loading with
    # weights_only=False would check files holding other objects as well, but by running code from
    # them, which the checkpointer never does (it loads with weights_only=True too), so it is not done.
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return None
    except Exception as exc:  # a short file fails as RuntimeError, EOFError, UnpicklingError...
        error = exc
    with open(path, "rb") as f:  # where is it broken? Parse the pickles, running nothing
        for _ in range(_LEGACY_PICKLES):
            problem = _walk_pickle(f, size)
            if problem:
                return problem
    if isinstance(error, pickle.UnpicklingError):
        # complete pickles that weights_only=True refuses: objects beyond tensors and containers.
        # Their tensor data cannot be read without running code from the file: kept, unchecked.
        lines = [line.strip() for line in str(error).splitlines() if "Unsupported" in line]
        logging.getLogger(__name__).warning(
            "%s holds objects other than tensors and plain containers; its tensor data was not checked "
            "(that would run code from the file), and the checkpointer will refuse to load it (%s)",
            path, lines[0] if lines else type(error).__name__)
        return None
    return f"truncated: the tensor data ends early or is damaged ({type(error).__name__}: {error})"


def check_weight_file(path):
    """What is wrong with a weight file whose SHA-256 is unknown, or None if it is complete.

    Accepted: a zip-format PyTorch checkpoint (``torch.save`` since 1.6), checked with
    ``zipfile`` (a truncated archive has no central directory; ``testzip`` checks every member's
    CRC-32); a legacy-format PyTorch checkpoint (a pickle starting with torch's magic number),
    loaded with ``torch.load(weights_only=True)``; any other pickle (a Detectron ``.pkl``), parsed
    to its end with :mod:`pickletools`. Nothing in the file is run. Anything else (an HTML page in
    place of the file, say) is reported.
    """
    size = os.path.getsize(path)
    if size == 0:
        return "truncated: the file is empty"
    with open(path, "rb") as f:
        head = f.read(4)
        if head == b"PK\x03\x04":
            return _check_zip(path)
        f.seek(0)
        try:
            is_legacy_torch = _NoGlobalsUnpickler(f).load() == _TORCH_MAGIC
        except Exception:
            is_legacy_torch = False
        if is_legacy_torch:
            return _check_legacy(path, size)
        f.seek(0)
        problem = _walk_pickle(f, size)
    if problem and head[:1] != b"\x80":  # does not start like a pickle of protocol 2 or later
        return f"not a PyTorch checkpoint nor a pickle: it starts with {head!r}"
    return problem


def cache_url(url, model_dir=None, progress=True):
    """Path of the cached copy of ``url``, downloading it first if needed.

    A download goes to a temporary file next to the cached copy and is checked before it is moved
    there: against :func:`expected_sha256` when that is known, else by :func:`check_weight_file`,
    whose passing files get their SHA-256 pinned in ``<cached>.sha256``. A cached copy is checked
    each time it is used against the known sum, else against its pin if it has one; one that fails
    is removed and downloaded again. A cached copy with neither (put there by hand) is used as is.

    Raises:
        FileNotFoundError: the download failed (no network, say); the message names the URL
            and the exact path to put the file at by hand.
        RuntimeError: the downloaded file does not match its checksum, or is truncated or not a
            weight file; it has been removed.
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
        pinned = read_pin(cached) if expected is None else None
        if expected is not None:
            if sha256_of(cached).startswith(expected):
                return cached
            logger.warning("%s does not match its SHA-256 %s: removing it and downloading it again", cached, expected)
        elif pinned is None:
            return cached  # put there by hand (or downloaded before pins existed): used as it is
        else:
            if sha256_of(cached) == pinned:
                return cached
            logger.warning("%s does not match the SHA-256 %s pinned on its first download (in %s): "
                           "removing it and downloading it again", cached, pinned, cached + PIN_SUFFIX)
    _remove(cached, cached + PIN_SUFFIX)  # a corrupted copy, or a pin left without its file
    logger.info("downloading %s to %s", url, cached)
    partial = f"{cached}.{uuid.uuid4().hex[:8]}.download"
    try:
        # torch writes a temporary file of its own and moves it to ``partial`` when complete
        torch.hub.download_url_to_file(url, partial, progress=progress and sys.stderr.isatty())
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError...)
        _remove(partial)
        raise FileNotFoundError(
            f"could not download {url} ({type(exc).__name__}: {exc}). If this machine is offline, "
            f"download the file elsewhere and put it at {cached}"
        ) from exc
    try:
        got = sha256_of(partial)
        if expected is not None:
            if not got.startswith(expected):
                raise RuntimeError(
                    f"the file downloaded from {url} is corrupted: SHA-256 {got}, expected {expected}. "
                    f"It has been removed; try again, or put a good copy at {cached}"
                )
        else:
            problem = check_weight_file(partial)
            if problem:
                raise RuntimeError(
                    f"the file downloaded from {url} to {cached} is not a complete weight file ({problem}). "
                    f"It has been removed; try again, or put a good copy at {cached}"
                )
        os.replace(partial, cached)
    except BaseException:
        _remove(partial)
        raise
    if expected is None:
        write_pin(cached, got)  # trust on first use: a later change to the cached copy is caught
    return cached
