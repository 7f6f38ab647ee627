"""INT8 post-training static quantization of the detector's ONNX export (onnxruntime, QDQ format).

Only the convolutions are quantized (``op_types_to_quantize=["Conv"]``): weights int8 per output
channel (symmetric), activations uint8 per tensor (asymmetric, ranges from the minimum and maximum
seen on calibration images). Everything else, the post-processing included (box decoding, top-k,
``NonMaxSuppression``), stays float32, so the int8 file has the graph contract of
:mod:`fcos_core.export.onnx` (input ``image`` [1, 3, H, W], outputs ``boxes``, ``scores``,
``labels``) and runs wherever the float32 export runs (``TEST.ONNX_PRECISION "int8"`` in
:mod:`fcos_core.export.runtime`).

Calibration images are DATASETS.TRAIN's, through the *test* transforms (the inputs the graph sees at
inference), ``num_images`` of them spread evenly over the dataset. An image that cannot be read is
skipped with a warning naming it; when none can be read, a ValueError names the dataset.
:class:`ArrayCalibrationReader` calibrates on given arrays instead (tools/benchmark.py's deploy part:
variants of its benchmark image).
"""
import logging
import os
import tempfile

import numpy as np
import torch

from fcos_core.data.datasets.skips import data_skip_counts

__all__ = ["ImageCalibrationReader", "ArrayCalibrationReader", "quantize_export", "int8_path", "make_calibration_dataset", "quantize_checkpoint"]

UNREADABLE = "unreadable_image"  # the datasets' skip reason for an image that cannot be decoded
PRECISION = "fcos_precision"  # metadata entry: "int8" in a quantized file
logger = logging.getLogger(__name__)


def int8_path(fp32_path):
    """Where the int8 twin of the export ``fp32_path`` lives: ``<name>.int8.onnx`` beside it."""
    root = fp32_path[:-5] if fp32_path.endswith(".onnx") else fp32_path
    return root + ".int8.onnx"


class ImageCalibrationReader(object):
    """onnxruntime ``CalibrationDataReader`` over ``num_images`` images of ``dataset`` (items
    ``(image tensor [3, h, w] after the test transforms, target, index)``), spread evenly over it.

    ``get_next() -> {"image": float32 array [1, 3, h, w]}`` or None at the end. Unreadable images
    (counted by the dataset as "unreadable_image", or OSError / ValueError) are skipped with a warning. ``name`` (the dataset names)
    goes into the error raised when no image at all could be read.
    """

    def __init__(self, dataset, num_images, name, log_every=25):
        if num_images <= 0:
            raise ValueError("--calib-images must be positive, got {}".format(num_images))
        if len(dataset) == 0:
            raise ValueError("calibration dataset {} has no images".format(name))
        count = min(num_images, len(dataset))
        self.indices = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
        self.dataset, self.name, self.log_every = dataset, name, log_every
        self.position, self.used, self.skipped = 0, 0, []

    def describe(self):
        """What was calibrated on (str), for the int8 file's metadata: ``"<n> images of <name>"``."""
        return "{} images of {}".format(self.used, self.name)

    def get_next(self):
        while self.position < len(self.indices):
            index = self.indices[self.position]
            self.position += 1
            unreadable = data_skip_counts(self.dataset)[UNREADABLE]
            try:
                image = self.dataset[index][0]
            except (OSError, ValueError) as exc:  # a dataset that raises on a missing / broken image
                logger.warning("calibration: skipping image %d of %s (%s: %s)", index, self.name,
                               type(exc).__name__, exc)
                self.skipped.append(index)
                continue
            if data_skip_counts(self.dataset)[UNREADABLE] > unreadable:
                # COCODataset in evaluation mode gives a black placeholder (and warns): not calibration data
                self.skipped.append(index)
                continue
            self.used += 1
            if self.used % self.log_every == 0 or self.position == len(self.indices):
                logger.info("calibration: %d/%d images", self.position, len(self.indices))
            return {"image": image[None].to(torch.float32).contiguous().numpy()}
        if self.used == 0:
            raise ValueError("calibration dataset {}: none of its {} images tried could be read (indices {})".format(
                self.name, len(self.indices), self.skipped[:10]))
        return None


class ArrayCalibrationReader(object):
    """onnxruntime ``CalibrationDataReader`` over ``arrays``, an iterable of float32 arrays
    ``[1, 3, h, w]`` (images after the test transforms, as the graph's ``image`` input takes them).

    ``name`` says what they are, for the int8 file's metadata (:meth:`describe`) and the error raised
    when ``arrays`` holds none.
    """

    def __init__(self, arrays, name):
        self.arrays, self.name, self.used = iter(arrays), name, 0

    def describe(self):
        return "{} images of {}".format(self.used, self.name)

    def get_next(self):
        image = next(self.arrays, None)
        if image is None:
            if self.used == 0:
                raise ValueError("calibration images {}: none given".format(self.name))
            return None
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError("calibration images {}: expected float32 arrays [1, 3, h, w], got shape {}".format(
                self.name, list(image.shape)))
        self.used += 1
        return {"image": np.ascontiguousarray(image)}


def quantize_export(fp32_path, output, reader, metadata=None):
    """Quantize the convolutions of the ONNX file ``fp32_path`` with the ranges ``reader`` (an
    onnxruntime ``CalibrationDataReader``) yields, and write the result to ``output`` atomically
    (a temporary file in the same folder renamed into place). ``fp32_path``'s metadata_props are
    kept, plus ``fcos_precision: int8``, ``fcos_calibration`` (``reader.describe()`` when it has
    one, after calibration) and ``metadata`` (str -> str).

    Returns:
        str: ``output``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .onnx import write_metadata
    from .runtime import _read_metadata

    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=folder)
    os.close(fd)
    try:
        quantize_static(fp32_path, tmp, reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        kept = _read_metadata(fp32_path)
        kept[PRECISION] = "int8"
        if hasattr(reader, "describe"):
            kept["fcos_calibration"] = reader.describe()
        kept.update(metadata or {})
        write_metadata(tmp, kept)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output


def make_calibration_dataset(cfg):
    """DATASETS.TRAIN of ``cfg`` (concatenated) with the test transforms; returns (dataset, names str)."""
    from fcos_core.data import datasets as D
    from fcos_core.data.build import build_dataset, load_dataset_catalog
    from fcos_core.data.transforms import build_transforms

    names = list(cfg.DATASETS.TRAIN)
    parts = build_dataset(names, build_transforms(cfg, False), load_dataset_catalog(cfg.PATHS_CATALOG), False)
    return (parts[0] if len(parts) == 1 else D.ConcatDataset(parts)), "DATASETS.TRAIN {}".format(", ".join(names))


def quantize_checkpoint(cfg, weight, num_images=300, output=None):
    """The int8 export of ``cfg`` with the weight file ``weight``: the float32 export (made or taken
    from the export cache, :func:`fcos_core.export.runtime.cached_export`) calibrated on
    ``num_images`` images of DATASETS.TRAIN and written to ``output`` (None: :func:`int8_path` of the
    cached export, where ``TEST.ONNX_PRECISION "int8"`` looks for it).

    ``cfg`` must give MODEL.FCOS.NUM_CLASSES (> 0). Returns (int8 path, float32 path).
    """
    from .runtime import KEY, _read_metadata, cached_export

    fp32 = cached_export(cfg, weight)
    dataset, name = make_calibration_dataset(cfg)
    reader = ImageCalibrationReader(dataset, num_images, name)
    logger.info("Calibrating %s on %d images of %s", fp32, len(reader.indices), name)
    out = quantize_export(fp32, output or int8_path(fp32), reader, {KEY: _read_metadata(fp32)[KEY]})
    if reader.skipped:
        logger.warning("calibration: %d unreadable images of %s skipped", len(reader.skipped), name)
    return out, fp32
