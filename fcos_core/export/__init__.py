"""Exporting the detector for deployment (ONNX); a layer above ``modeling``, like ``engine``."""
