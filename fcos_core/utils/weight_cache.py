"""Downloading weight files into the torch hub cache, and checking them (no code from a file is run).

A download is written to a temporary file in ``$TORCH_HOME/hub/checkpoints`` and checked before it
takes its name there; one that fails is removed and reported (a :class:`RuntimeError` naming the URL
and the path). A file is checked against, in this order:

* **a known SHA-256**: the caller's (a model-zoo entry's), :data:`KNOWN_SHA256` (by file name), or,
  as torch hub does, the hex prefix at the end of the URL's file name (``name-<sha256 prefix>.pth``).
  The file must match it after a download and each time a cached copy is used; a cached copy that
  does not is removed and downloaded again, and when that download fails too the error names the
  copy's sum, the expected prefix and the path (:class:`HashMismatchError` when the file is refused).
* **no known SHA-256** (the original FCOS files: it published no sums): the download must be a
  complete file of a format the checkpointer reads (:func:`check_weight_file`): a zip-format PyTorch
  checkpoint (every member's CRC checked), a legacy (pre-1.6) PyTorch checkpoint (its pickles parsed
  and the file loaded with ``weights_only=True``), or a pickle such as a Detectron ``.pkl`` (parsed to
  its end). Its SHA-256 is then pinned, trust on first use, in ``<file>.sha256`` next to it
  (``sha256sum -c`` format); a cached copy that no longer matches its pin is removed, with the pin,
  and downloaded again. A file put in the cache by hand has no pin and is used as it is.

Hosts that no longer exist (:data:`GONE_HOSTS`, AARNet CloudStor) are not asked: without a cached
copy the error says the host is gone and names the path to put a copy at. Offline, the error names
the URL and that path.
"""
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

# Expected SHA-256 (hex, full or a prefix) of downloaded files, by file name, for files whose name
# does not carry one. Empty: the original FCOS publishes no checksums and its files could not be
# downloaded here to compute them; they are checked structurally and pinned on first use instead.
KNOWN_SHA256 = {}

# torch hub's rule for a URL's file name: "resnet50-0676ba61.pth" carries the SHA-256 prefix 0676ba61
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")

# host -> why it is not asked. CloudStor's notice: "As of 12pm AEDT on 15 December 2023 you can no
# longer access CloudStor"; every original FCOS download and its MobileNetV2 ImageNet file were there.
GONE_HOSTS = {"cloudstor.aarnet.edu.au": "AARNet CloudStor, decommissioned on 15 December 2023"}


class HashMismatchError(RuntimeError):
    """A weight file whose SHA-256 does not match the one published for it (it is not loaded)."""


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


def hash_mismatch(path, got, expected, where="the prefix in its file name"):
    """The sentence for a file whose SHA-256 ``got`` does not start with ``expected`` (hex)."""
    return (f"{path} has SHA-256 {got}, which does not match {expected}, the SHA-256 published for "
            f"{os.path.basename(path)} ({where}): it is not the published file and is not loaded")


def _check_cached(cached, expected):
    """None when the cached copy may be used, else why not (it is then removed by the caller)."""
    logger = logging.getLogger(__name__)
    if expected is not None:
        got = sha256_of(cached)
        if got.startswith(expected):
            return None
        problem = hash_mismatch(cached, got, expected)
    else:
        pinned = read_pin(cached)
        if pinned is None:
            return None  # put there by hand (or downloaded before pins existed): used as it is
        got = sha256_of(cached)
        if got == pinned:
            return None
        problem = (f"{cached} has SHA-256 {got}, not the {pinned} pinned on its first download "
                   f"(in {cached + PIN_SUFFIX})")
    logger.warning("%s: removing it and downloading it again", problem)
    return problem


def _download(url, cached, progress, stale):
    """Download ``url`` to a temporary file beside ``cached``; returns its path.

    Raises:
        FileNotFoundError: the host is gone or the download failed; names the URL and ``cached``
            (and ``stale``, why the cached copy was refused, when there was one).
    """
    before = f"The cached copy was refused: {stale}; it has been removed. " if stale else ""
    gone = GONE_HOSTS.get(urlparse(url).hostname or "")
    if gone:
        raise FileNotFoundError(
            f"{before}{url} cannot be downloaded: its host, {gone}, no longer serves files. "
            f"If you have a copy of {os.path.basename(cached)}, pass its path instead or put it at {cached}")
    logging.getLogger(__name__).info("downloading %s to %s", url, cached)
    partial = f"{cached}.{uuid.uuid4().hex[:8]}.download"
    try:
        # torch writes a temporary file of its own and moves it to ``partial`` when complete
        torch.hub.download_url_to_file(url, partial, progress=progress and sys.stderr.isatty())
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError...)
        _remove(partial)
        raise FileNotFoundError(
            f"{before}could not download {url} ({type(exc).__name__}: {exc}). If this machine is offline, "
            f"download the file elsewhere and put it at {cached}") from exc
    return partial


def _verify_download(partial, url, cached, expected):
    """The SHA-256 of a finished download; raises (after removing it) when it fails its check."""
    try:
        got = sha256_of(partial)
        if expected is not None and not got.startswith(expected):
            raise HashMismatchError(
                f"the file downloaded from {url} is corrupted or not the published file: its SHA-256 is "
                f"{got}, expected {expected}. It has been removed; try again, or put a good copy at {cached}")
        problem = check_weight_file(partial) if expected is None else None
        if problem:
            raise RuntimeError(
                f"the file downloaded from {url} to {cached} is not a complete weight file ({problem}). "
                f"It has been removed; try again, or put a good copy at {cached}")
    except BaseException:
        _remove(partial)
        raise
    return got


def cache_url(url, model_dir=None, progress=True, sha256=None):
    """Path of the cached copy of ``url``, downloading it first if needed.

    ``sha256`` (hex, full or a prefix): the published sum of the file, if the caller knows it;
    otherwise :func:`expected_sha256` of the file name. A download goes to a temporary file next to
    the cached copy and is checked before it is moved there: against the expected sum when there is
    one, else by :func:`check_weight_file`, whose passing files get their SHA-256 pinned in
    ``<cached>.sha256``. A cached copy is checked each time it is used against the expected sum,
    else against its pin if it has one; one that fails is removed and downloaded again. A cached
    copy with neither (put there by hand) is used as is.

    Raises:
        FileNotFoundError: the host is gone (:data:`GONE_HOSTS`) or the download failed (no network,
            say); the message names the URL, the exact path to put the file at by hand and, when a
            cached copy was refused, its SHA-256 and the expected one.
        HashMismatchError: the downloaded file does not match the published SHA-256 (it has been removed).
        RuntimeError: the download is truncated or not a weight file (it has been removed).
    """
    model_dir = model_dir or cache_dir()
    os.makedirs(model_dir, exist_ok=True)
    filename = url_filename(url)
    if not filename:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    cached = os.path.join(model_dir, filename)
    expected = (sha256 or expected_sha256(filename) or "").lower() or None
    stale = _check_cached(cached, expected) if os.path.exists(cached) else None
    if os.path.exists(cached) and stale is None:
        return cached
    _remove(cached, cached + PIN_SUFFIX)  # a refused copy, or a pin left without its file
    partial = _download(url, cached, progress, stale)
    got = _verify_download(partial, url, cached, expected)
    os.replace(partial, cached)
    if expected is None:
        write_pin(cached, got)  # trust on first use: a later change to the cached copy is caught
    return cached
