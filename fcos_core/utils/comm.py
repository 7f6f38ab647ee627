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


def gather_tensor_dicts(tensors, dst=0):
    """Gather ``{name: Tensor}`` from every process to process ``dst`` as tensors (the data is not
    pickled: one ``dist.gather`` of a flat, padded buffer per name).

    Arguments:
        tensors (dict[str, Tensor]): this process's tensors; the first dimension may differ between
            processes, the dtype and the other dimensions may not. A name that some process lacks
            arrives there as an empty tensor ([0, ...]) of the others' dtype and trailing shape.
        dst (int): the receiving rank.

    Returns:
        On ``dst``: list (rank order) of ``{name: CPU tensor}``; on the other ranks None.
        In one process: ``[tensors]``.

    Raises:
        ValueError: two processes give a name different dtypes or trailing shapes (names them).
    """
    world_size = get_world_size()
    if world_size == 1:
        return [tensors]
    # the schema is a few bytes per name: name -> (dtype, shape) of each process
    schemas = all_gather({name: (str(t.dtype).replace("torch.", ""), tuple(t.shape)) for name, t in tensors.items()})
    layout = _agreed_layout(schemas)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    rank = get_rank()
    received = [{} for _ in range(world_size)] if rank == dst else None
    for name, (dtype, trailing) in sorted(layout.items()):
        shapes = [schema.get(name, (dtype, (0,) + trailing))[1] for schema in schemas]
        numels = [_numel(shape) for shape in shapes]
        mine = tensors.get(name, torch.zeros((0,) + trailing, dtype=getattr(torch, dtype)))
        buffer = torch.zeros(max(max(numels), 1), dtype=mine.dtype, device=device)
        buffer[:mine.numel()] = mine.reshape(-1).to(device)
        parts = [torch.empty_like(buffer) for _ in range(world_size)] if rank == dst else None
        dist.gather(buffer, parts, dst=dst)
        if rank == dst:
            for r in range(world_size):
                received[r][name] = parts[r][:numels[r]].cpu().reshape(shapes[r])
    return received


def _agreed_layout(schemas):
    """{name: (dtype name, trailing shape)} over the processes' schemas, which must agree."""
    layout = {}
    for rank, schema in enumerate(schemas):
        for name, (dtype, shape) in schema.items():
            seen = layout.setdefault(name, (dtype, tuple(shape[1:])))
            if seen != (dtype, tuple(shape[1:])):
                raise ValueError("gather_tensor_dicts: {!r} is {} [*, {}] on rank {} but {} [*, {}] on another "
                                 "rank".format(name, dtype, list(shape[1:]), rank, seen[0], list(seen[1])))
    return layout


def _numel(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n
