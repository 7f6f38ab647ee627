"""fcos_core.utils.comm.broadcast_buffers in two real (Gloo) processes, and as a no-op in one."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fcos_core.utils.comm import broadcast_buffers


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # each process its own statistics, as training leaves them
        bn = torch.nn.BatchNorm2d(3)
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.num_batches_tracked.fill_(10 + rank)
        with torch.no_grad():
            bn.weight.fill_(1.0 + rank)  # a parameter: DDP keeps those equal; not a buffer to copy
        before = {k: v.clone() for k, v in bn.state_dict().items()}
        broadcast_buffers(bn)
        torch.save({"before": before, "after": bn.state_dict()}, os.path.join(out_dir, f"rank{rank}.pth"))
    finally:
        dist.destroy_process_group()


def test_every_process_takes_rank_0s_buffers(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in (0, 1))
    assert not torch.equal(r0["before"]["running_mean"], r1["before"]["running_mean"])
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(r0["after"][key], r0["before"][key]), key  # rank 0 unchanged
        assert torch.equal(r1["after"][key], r0["before"][key]), key  # rank 1 now holds rank 0's
    for r in (r0, r1):  # parameters are not buffers: left as they were
        assert torch.equal(r["after"]["weight"], r["before"]["weight"])
    assert not torch.equal(r0["after"]["weight"], r1["after"]["weight"])


def test_one_process_is_left_alone():
    bn = torch.nn.BatchNorm2d(2)
    bn.running_mean.fill_(3.0)
    broadcast_buffers(bn)
    assert torch.equal(bn.running_mean, torch.full((2,), 3.0))
