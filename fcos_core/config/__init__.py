"""Configuration: the yacs defaults of FCOS and strict loading helpers.

``cfg`` is the global default config, at the original's public path
``fcos_core.config.cfg``. Only scripts (tools/, demo/, tests) may use it;
library code takes explicit arguments (see STYLE.md).
"""

from .config import CfgNode, UnknownConfigKeyError, resolve_device
from .defaults import _C as cfg

__all__ = ["cfg", "CfgNode", "UnknownConfigKeyError", "load_config", "resolve_device"]


def load_config(config_file=None, opts=None, freeze=True):
    """A copy of the defaults with a yaml file and overrides merged in.

    Args:
        config_file (str or None): yaml file to merge first.
        opts (list[str] or None): ``[KEY, VALUE, ...]`` overrides merged
            after the file (e.g. the trailing arguments of a command line).
        freeze (bool): return the config frozen.

    Returns:
        CfgNode: a new config; the global ``cfg`` is left untouched.

    Raises:
        UnknownConfigKeyError: a key is unknown (the message names the key,
            its source and the closest valid key).
        ValueError: a value has the wrong type.
    """
    config = cfg.clone()
    config.defrost()
    if config_file:
        config.merge_from_file(config_file)
    if opts:
        config.merge_from_list(list(opts))
    if freeze:
        config.freeze()
    return config
