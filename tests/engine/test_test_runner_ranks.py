"""make_test_runner in several processes: rank 0 makes its runner (exports on a cache miss) before
the barrier, every other rank after it, so the export is made once; rank 0 reaches the barrier even
when its export fails, so the others are not left waiting."""
from pathlib import Path

import pytest

from fcos_core.config import load_config
from fcos_core.engine import defaults
from fcos_core.export import runtime

QUICKSTART = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "fcos_shapes.yaml")


def _run(monkeypatch, rank, world_size=2, fail=False, events=None):
    """(runner, events) of make_test_runner on ``rank``; events (appended to ``events`` when given):
    "runner" (make_backend_runner) and "barrier"."""
    events = [] if events is None else events

    def make_backend_runner(cfg, weight):
        events.append("runner")
        if fail:
            raise RuntimeError("export failed")
        return "runner of " + weight

    monkeypatch.setattr(runtime, "make_backend_runner", make_backend_runner)
    monkeypatch.setattr(defaults, "resolve_num_classes_for_inference", lambda cfg, weight: cfg)
    monkeypatch.setattr(defaults, "get_world_size", lambda: world_size)
    monkeypatch.setattr(defaults, "get_rank", lambda: rank)
    monkeypatch.setattr(defaults, "synchronize", lambda: events.append("barrier"))
    cfg = load_config(QUICKSTART, ["TEST.BACKEND", "onnxruntime", "MODEL.WEIGHT", "w.pth"])
    return defaults.make_test_runner(cfg), events


def test_rank_zero_exports_before_the_barrier_the_others_after(monkeypatch):
    assert _run(monkeypatch, rank=0) == ("runner of w.pth", ["runner", "barrier"])
    assert _run(monkeypatch, rank=1) == ("runner of w.pth", ["barrier", "runner"])
    assert _run(monkeypatch, rank=0, world_size=1) == ("runner of w.pth", ["runner"])


def test_rank_zero_reaches_the_barrier_when_its_export_fails(monkeypatch):
    events = []
    with pytest.raises(RuntimeError, match="export failed"):
        _run(monkeypatch, rank=0, fail=True, events=events)
    assert events == ["runner", "barrier"]
