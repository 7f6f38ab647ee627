"""Per-sample random streams, so that training data is a function of (seed, iteration).

The training sampler hands each dataset index over as a :class:`SeededIndex`: an ``int`` that also
carries the seed of that sample's random augmentation. A dataset whose ``__getitem__`` is wrapped
with :func:`seeded_getitem` runs it with Python's ``random``, numpy's and torch's CPU generators
seeded from that number, so a flip or colour jitter does not depend on which DataLoader worker
fetched the sample, on how many processes share the batch, or on whether the run was restarted.
A plain ``int`` index leaves the generators alone (testing, or a dataset used on its own).
"""
import contextlib
import functools
import random

import numpy as np
import torch


class SeededIndex(int):
    """A dataset index (behaves as the ``int``) with the ``seed`` (int >= 0) of its augmentation."""

    def __new__(cls, index, seed):
        obj = super().__new__(cls, index)
        obj.seed = int(seed)
        return obj

    def __reduce__(self):
        # DataLoader workers receive the indices pickled; keep the seed on the way
        return SeededIndex, (int(self), self.seed)

    def __repr__(self):
        return "SeededIndex({}, seed={})".format(int(self), self.seed)


@contextlib.contextmanager
def seeded_rng(seed):
    """Run the block with ``random``, ``numpy.random`` and torch's CPU generator seeded with ``seed``.

    Their previous states come back afterwards, so the caller's own random stream is untouched.
    """
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.default_generator.manual_seed(seed)  # the CPU one only: CUDA streams stay untouched
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def seeded_getitem(getitem):
    """Decorator for ``Dataset.__getitem__(self, index)``: seed the generators when ``index`` is a
    :class:`SeededIndex` (see :func:`seeded_rng`); call ``getitem`` unchanged otherwise."""

    @functools.wraps(getitem)
    def wrapper(self, index):
        seed = getattr(index, "seed", None)
        if seed is None:
            return getitem(self, index)
        with seeded_rng(seed):
            return getitem(self, index)

    return wrapper


def rng_state():
    """Python, numpy and torch random states in a form ``torch.load(weights_only=True)`` accepts
    (numpy's key array as an int64 tensor, tuples as lists)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what :func:`rng_state` saved (CUDA states only where CUDA is available)."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    """Lists back to tuples, recursively (``random.setstate`` wants tuples; a checkpoint has lists)."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
