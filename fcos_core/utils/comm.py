"""Helpers for multi-process (torch.distributed) runs that also work in a single process."""
import torch
import torch.distributed as dist


def is_dist_avail_and_initialized():
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_world_size():
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank():
    """Rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process():
    return get_rank() == 0


def synchronize():
    """Barrier across processes; a no-op in a single process."""
    if is_dist_avail_and_initialized() and get_world_size() > 1:
        dist.barrier()


def broadcast_buffers(module, src=0):
    """Copy the buffers of ``module`` (BatchNorm running statistics...) from process ``src`` to all
    processes, in place; nothing without a process group.

    Training keeps BatchNorm statistics per process (DDP without buffer sync, as the original), and
    checkpoints hold rank 0's: an evaluation in several processes must use those, or each process
    would score its share of the images with statistics that no saved model has.
    """
    if get_world_size() < 2:
        return
    with torch.no_grad():
        for buf in module.buffers():
            dist.broadcast(buf, src)


def reduce_sum(tensor):
    """Sum of ``tensor`` over all processes (a new tensor; the input is not changed).

    Used by the FCOS loss to normalise by the number of positives and the centerness sum of the
    whole batch across GPUs (FCOS, Sec. 3.1, Eq. 2), so every process divides by the same number.
    """
    if get_world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather(data):
    """A list with ``data`` (any picklable object) from every process, in rank order."""
    world_size = get_world_size()
    if world_size == 1:
        return [data]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, data)
    return gathered
