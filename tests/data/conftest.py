"""Fixtures shared by the tests of fcos_core.data: a digest of a written folder, and the catalog's
embedded shapes splits pointed at the test's own tmp_path."""
import hashlib
import os

import pytest


def _folder_digest(folder):
    """sha256 (hex) over every file's path relative to ``folder`` and its bytes, in sorted order."""
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture
def folder_digest():
    """The function folder -> sha256 hex of its files' relative paths and bytes (equal digests: the
    same files with the same bytes)."""
    return _folder_digest


@pytest.fixture
def shapes_split_locks(tmp_path, monkeypatch):
    """Points the catalog's shapes splits at ``tmp_path`` (``FCOS_DATA_DIR``, 3 images a split) and
    returns the list that records, in order, every lock path ``embedded.file_lock`` is asked for."""
    from fcos_core.data.datasets import embedded

    monkeypatch.setenv("FCOS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FCOS_SHAPES_NUM_IMAGES", "3")
    locks = []
    real_lock = embedded.file_lock
    monkeypatch.setattr(embedded, "file_lock", lambda path: locks.append(path) or real_lock(path))
    return locks
