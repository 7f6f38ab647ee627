"""Benchmarks of this FCOS against torchvision (the library behind tools/benchmark.py,
tools/benchmark_ops.py, tools/profile_inference.py and tools/conv_throughput.py), split by job:

* ``models``: the models (ours, torchvision's), images, boxes and the classifier calibration;
* ``timing``: synchronised, interleaved timing and ratios;
* ``memory``: peak memory (profiler events, /proc, a child process per model);
* ``inference``, ``train``, ``accuracy``, ``ops``: the parts of the benchmark;
* ``report``: machine information and the markdown tables.

Nothing is imported here, so ``python -m fcos_core.benchmark.memory`` (the memory child) runs cleanly.
"""
