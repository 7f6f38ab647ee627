"""FCOS: Fully Convolutional One-Stage Object Detection (arXiv:1904.01355)."""
__version__ = "0.1.0"
