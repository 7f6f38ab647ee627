"""The data benchmark of tools/benchmark_data.py: a registry of rows, each a small function.

A row is registered with :func:`register_row`; it gets the parsed command line and returns a list
of dicts (one per measured variant, e.g. "before" and "after"; same keys within a row). The
script runs the rows asked for and writes one markdown table per row, under the machine's CPU name
and flags, plus a JSON file. A module with rows is listed in ``ROW_MODULES`` (imported on use), so
adding a row is one function and one line::

    @register_row("coco_eval", "COCO evaluation time", add_arguments=lambda p: p.add_argument(...))
    def coco_eval_rows(args):
        return [{"backend": "pycocotools", "seconds": ...}, ...]
"""
import datetime
import importlib
import platform
import sys
from collections import OrderedDict

from fcos_core.benchmark.report import ISA_FLAGS, cpu_info

# modules whose import registers rows (dataset memory and build time first)
ROW_MODULES = ["fcos_core.benchmark.dataset_memory", "fcos_core.benchmark.eval_backends", "fcos_core.benchmark.loader"]
ROWS = OrderedDict()  # name -> (title, function(args) -> list of dicts, add_arguments(parser) or None)


def register_row(name, title, add_arguments=None):
    """Decorator: register ``fn(args) -> list of dicts`` as row ``name`` (``title`` heads its table;
    ``add_arguments(parser)`` adds the row's own options to the command line)."""
    def wrap(fn):
        ROWS[name] = (title, fn, add_arguments)
        return fn
    return wrap


def load_rows():
    """Import ``ROW_MODULES`` (registering their rows); returns ``ROWS``."""
    for module in ROW_MODULES:
        importlib.import_module(module)
    return ROWS


def machine_info(argv):
    """Date, the command (``argv``), CPU and the versions of python and the json parser."""
    from fcos_core.data.datasets.json_stream import PARSER

    info = OrderedDict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                       command="python tools/benchmark_data.py " + " ".join(argv))
    info.update(cpu_info())
    info.update(python=platform.python_version(), json_parser=PARSER)
    return info


def run_rows(args, names=None):
    """{row name: list of dicts} of the rows ``names`` (default: all registered), in order."""
    rows = load_rows()
    out = OrderedDict()
    for name in names or list(rows):
        title, fn, _ = rows[name]
        print("running row {!r}: {}".format(name, title), file=sys.stderr, flush=True)
        out[name] = fn(args)
    return out


def markdown(info, results):
    """The markdown text: the machine line, then per row its title and table."""
    from fcos_core.benchmark.report import dict_table  # imports torchvision: not in the rows' child processes

    lines = ["`{}`".format(info["command"]), "",
             "CPU: {} ({} logical CPUs; flags {}); Python {}; json parser {}; {}".format(
                 info["cpu"], info["cpus"], info["flags"] or "none of " + ",".join(ISA_FLAGS),
                 info["python"], info["json_parser"], info["date"]), ""]
    for name, rows in results.items():
        lines += ["**{}** ({})".format(ROWS[name][0], name), ""] + dict_table(rows) + [""]
    return "\n".join(lines)
