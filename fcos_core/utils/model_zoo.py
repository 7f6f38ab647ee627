"""Downloading weight files into the torch hub cache, with a clear error when offline."""
import logging
import os
import sys
from urllib.parse import urlparse

import torch


def cache_dir():
    """Where downloaded weights live: ``$TORCH_HOME/hub/checkpoints`` (torch's own cache)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def url_filename(url):
    """The file name a URL is cached under (the fragment after ``#`` wins, as in the original)."""
    parsed = urlparse(url)
    if parsed.fragment:
        return os.path.basename(parsed.fragment)
    return os.path.basename(parsed.path)


def cache_url(url, model_dir=None, progress=True):
    """Path of the cached copy of ``url``, downloading it first if needed.

    Raises:
        FileNotFoundError: the download failed (no network, say); the message names the URL
            and the exact path to put the file at by hand.
    """
    model_dir = model_dir or cache_dir()
    os.makedirs(model_dir, exist_ok=True)
    filename = url_filename(url)
    if not filename:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    cached = os.path.join(model_dir, filename)
    if os.path.exists(cached):
        return cached
    logging.getLogger(__name__).info("downloading %s to %s", url, cached)
    try:
        torch.hub.download_url_to_file(url, cached, progress=progress and sys.stderr.isatty())
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError...)
        if os.path.exists(cached):
            os.remove(cached)
        raise FileNotFoundError(
            f"could not download {url} ({type(exc).__name__}: {exc}). If this machine is offline, "
            f"download the file elsewhere and put it at {cached}"
        ) from exc
    return cached
