from .fcos import FCOSHead, FCOSModule, build_fcos  # noqa: F401
