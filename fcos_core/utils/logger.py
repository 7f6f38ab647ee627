"""Logging set-up for the scripts: a console handler and ``<output_dir>/log.txt``."""
import logging
import os
import sys


def setup_logger(name, save_dir, distributed_rank, filename="log.txt"):
    """Configure and return the logger ``name``.

    Only rank 0 logs; the others get a logger with no handlers at WARNING level, so that
    eight processes do not print eight copies.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if distributed_rank > 0:
        logger.setLevel(logging.WARNING)
        return logger
    formatter = logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s")
    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(logging.INFO)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(save_dir, filename))
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(formatter)
        logger.addHandler(fh)
    return logger
