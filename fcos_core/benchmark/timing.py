"""Timing helpers shared by every benchmark: synchronised, interleaved rounds and ratios."""
import statistics
import time
from collections import OrderedDict

import torch


def sync(device):
    """Wait for the device's queued work (CUDA); a no-op on a CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved(fns, runs, warmup, device, rotate=False):
    """{name: [seconds per timed round]}: each round calls every fn once, in order; with ``rotate``
    round r starts at the (r mod n)-th fn, so that no fn always follows the same one (a runtime's
    threads still spinning after its call slow down whichever call comes next)."""
    times = OrderedDict((name, []) for name in fns)
    names = list(fns)
    for r in range(warmup + runs):
        start_at = r % len(names) if rotate and names else 0
        for name in names[start_at:] + names[:start_at]:
            fn = fns[name]
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(ours_times, times):
    """Median over rounds of ours / this in the same round (adjacent in time, so robust to load
    that changes between rounds); NaN without times."""
    if not ours_times or not times:
        return float("nan")
    return statistics.median(a / b for a, b in zip(ours_times, times))


def median_ms(fn, device, repeat, warmup):
    """Median milliseconds of ``repeat`` calls of ``fn`` after ``warmup`` calls (synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)
