"""Name -> constructor registries, so that components are chosen by name in the config.

``BACKBONES`` maps ``MODEL.BACKBONE.CONV_BODY`` names (for example ``"R-50-FPN-RETINANET"``)
to builder functions ``f(cfg) -> nn.Module``.
"""


class Registry(dict):
    """A ``dict`` from names to callables with a decorator to fill it.

    Example::

        BACKBONES = Registry()

        @BACKBONES.register("R-50-FPN-RETINANET")
        @BACKBONES.register("R-101-FPN-RETINANET")
        def build_resnet_fpn_p3p7_backbone(cfg): ...

        BACKBONES.register("other", some_function)  # without the decorator

    Registering a name twice raises ``KeyError``, so that a typo cannot silently replace
    an existing entry.
    """

    def register(self, name, obj=None):
        """Register ``obj`` under ``name``; with ``obj`` omitted, return a decorator."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def decorator(fn):
            self._add(name, fn)
            return fn

        return decorator

    def _add(self, name, obj):
        if name in self:
            raise KeyError("'{}' is already registered".format(name))
        self[name] = obj


BACKBONES = Registry()
