"""Peak memory: the profiler's allocation events (CPU), the CUDA allocator's peak, the peak resident
set size from /proc, and the training benchmark's child process (one per model), which runs as
``python -m fcos_core.benchmark.memory --child MODEL ...``."""
import argparse
import json
import resource
import subprocess
import sys

import torch

from fcos_core.benchmark.models import ROOT


def extra_peak_bytes(fn, device):
    """Peak of the memory allocated by ``fn`` above what was allocated before it.

    CPU: the running sum, in time order, of the signed sizes of the ``Allocation`` events that
    ``torch.profiler.profile(profile_memory=True)`` records; CUDA: ``torch.cuda.max_memory_allocated()``
    after ``reset_peak_memory_stats()`` minus ``torch.cuda.memory_allocated()`` before the call.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    allocation = torch._C._profiler._EventType.Allocation
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == allocation and str(node.extra_fields.device) == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
    running = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):  # frees are negative sizes
        running += size
        peak = max(peak, running)
    return peak


def profiled_peak_bytes(fn):
    """Peak of CPU tensor memory allocated by ``fn`` above what was allocated before it, from the
    allocation/free events of ``torch.profiler.profile(profile_memory=True)`` (the measurement of
    the ops benchmark, so both count memory the same way)."""
    return extra_peak_bytes(fn, "cpu")


def peak_rss_mib():
    """This process's peak resident set size: VmHWM of /proc/self/status (per address space, so not
    inherited from the parent the way ``ru_maxrss`` is across fork + exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_memory(args):
    """In the child: peak memory of one training step of ``args.child`` (printed as one JSON line)."""
    amp = args.child.endswith(":amp")
    name = args.child[:-4] if amp else args.child
    from fcos_core.benchmark.train import make_train_step  # train imports this module

    torch.set_num_threads(args.threads)
    step = make_train_step(name, tuple(args.size), args.seed, args.device, amp=amp)
    step()  # warm-up: allocates the momentum buffers, caches
    out = {"model": name, "held_mib": step.held_bytes() / 2**20}
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_step_mib=(peak - base) / 2**20, peak_total_mib=peak / 2**20, method="torch.cuda.max_memory_allocated")
    else:
        peak = profiled_peak_bytes(step)
        out.update(
            peak_step_mib=peak / 2**20,
            peak_total_mib=out["held_mib"] + peak / 2**20,
            method="torch.profiler profile_memory (peak allocated tensors) + held tensors",
        )
    out["max_rss_mib"] = peak_rss_mib()
    print("CHILD_RESULT " + json.dumps(out), flush=True)


def peak_memory_in_child(name, args, amp=False):
    """Run the memory child (this module with ``--child``) for one model; its JSON result (or an ``error`` entry)."""
    cmd = [
        sys.executable, "-m", "fcos_core.benchmark.memory", "--child", name + (":amp" if amp else ""),
        "--device", args.device, "--threads", str(args.threads), "--seed", str(args.seed),
        "--size", str(args.size[0]), str(args.size[1]),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("CHILD_RESULT "):
            return json.loads(line[len("CHILD_RESULT "):])
    return {"error": (proc.stderr.strip().splitlines() or ["no result"])[-1][:200]}


def child_main(argv=None):
    """The memory child's command line: ``--child MODEL[:amp] --device --threads --seed --size H W``."""
    parser = argparse.ArgumentParser(description="peak memory of one training step of one model")
    parser.add_argument("--child", required=True, metavar="MODEL")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[800, 1333])
    child_memory(parser.parse_args(argv))


if __name__ == "__main__":
    child_main()
