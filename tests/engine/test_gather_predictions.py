"""Distributed inference brings its detections to rank 0 as packed tensors (two real Gloo processes):
rank 0 gets every image's BoxList bit for bit, in index order, with every field; what is pickled is a
few hundred bytes of names and shapes, not the detections; an index that no process predicted is an
error naming it."""
import logging
import os
import pickle
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fcos_core.engine.inference import _accumulate_predictions_from_multiple_gpus
from fcos_core.structures import BoxList

NUM_IMAGES = 9


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prediction(index):
    """The BoxList of image ``index``, the same in every process: 0 boxes for index 4, else 300 + index."""
    n = 0 if index == 4 else 300 + index
    g = torch.Generator().manual_seed(index)
    xy = torch.rand(n, 2, generator=g) * 100
    boxlist = BoxList(torch.cat([xy, xy + 5], 1), (200 + index, 100), mode="xyxy")
    boxlist.add_field("scores", torch.rand(n, generator=g))
    boxlist.add_field("labels", torch.randint(1, 81, (n,), generator=g))
    boxlist.add_field("centerness", torch.rand(n, 1, generator=g, dtype=torch.float64))
    return boxlist


def _gather(indices, rank, pickled):
    """Run the gather on this rank's ``indices``, recording the size of every pickled object."""
    real = dist.all_gather_object

    def recording(out, obj, *args, **kwargs):
        pickled.append(len(pickle.dumps(obj)))
        return real(out, obj, *args, **kwargs)

    dist.all_gather_object = recording
    try:
        return _accumulate_predictions_from_multiple_gpus({i: prediction(i) for i in indices},
                                                          logging.getLogger("test"), NUM_IMAGES)
    finally:
        dist.all_gather_object = real


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        pickled = []
        # a DistributedSampler's split: rank 0 even indices, rank 1 odd ones plus a repeat of 0 (padding)
        mine = list(range(rank, NUM_IMAGES, 2)) + ([0] if rank == 1 else [])
        gathered = _gather(mine, rank, pickled)
        error = None
        try:  # rank 1 loses image 3 and 7
            _gather([i for i in mine if i not in (3, 7)], rank, pickled)
        except RuntimeError as e:
            error = str(e)
        result = None if gathered is None else [
            {"boxes": b.bbox, "size": b.size, "mode": b.mode, **b.extra_fields} for b in gathered]
        torch.save({"result": result, "pickled": pickled, "error": error, "none": gathered is None},
                   os.path.join(out_dir, f"rank{rank}.pth"))
    finally:
        dist.destroy_process_group()


def test_two_processes_gather_packed_detections_on_rank_0(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth", weights_only=False) for r in (0, 1))
    assert r1["none"] and r1["error"] is None  # only rank 0 receives (and checks)
    assert len(r0["result"]) == NUM_IMAGES
    for index, got in enumerate(r0["result"]):
        want = prediction(index)
        assert got["size"] == want.size and got["mode"] == "xyxy"
        assert torch.equal(got["boxes"], want.bbox), index
        for name in ("scores", "labels", "centerness"):
            assert got[name].dtype == want.get_field(name).dtype
            assert torch.equal(got[name], want.get_field(name)), (index, name)
    # what the old all_gather pickled (a rank's dict of BoxLists) against what is pickled now: the
    # schema (names, dtypes, shapes), under 1 kB whatever the number of boxes
    as_objects = len(pickle.dumps({i: prediction(i) for i in range(0, NUM_IMAGES, 2)}))
    assert as_objects > 40000
    assert r0["pickled"] and max(r0["pickled"] + r1["pickled"]) < 1000
    assert "2 of 9 images were predicted by no process (dataset indices: 3, 7)" in r0["error"]
