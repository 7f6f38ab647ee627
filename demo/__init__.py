"""Demo scripts (not installed with fcos_core); ``demo.predictor`` holds :class:`COCODemo`."""
