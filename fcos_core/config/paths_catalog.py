"""Named locations of data sets and weights (the names used by the original configs).

``DatasetCatalog.get("coco_2017_train")`` says which dataset class reads a ``DATASETS.TRAIN`` /
``DATASETS.TEST`` name and with which arguments; ``ModelCatalog.get("ImageNetPretrained/MSRA/R-50")``
returns the download address of the Detectron ImageNet weights that
``MODEL.WEIGHT: "catalog://ImageNetPretrained/MSRA/R-50"`` names.

``cfg.PATHS_CATALOG`` may point to a copy of this file with other entries.
"""
import difflib
import hashlib
import os
import re


class UnknownDatasetError(KeyError):
    """A dataset name that the catalog does not know (a ``KeyError`` that prints its message plainly)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class DatasetCatalog:
    """Where each named dataset lives, relative to a data root.

    Data root: ``$FCOS_DATA_DIR`` if that environment variable is set, else ``DATA_DIR``
    ("datasets", relative to the working directory, as in the original). Layout under it, as in the
    original: ``coco/train2017``, ``coco/annotations/instances_train2017.json``, ...,
    ``voc/VOC2007/{JPEGImages,Annotations,ImageSets/Main}``.

    Names accepted by :meth:`get` (in ``DATASETS.TRAIN`` / ``DATASETS.TEST``):

    * the keys of ``DATASETS``: COCO 2014/2017 splits, ``coco_2017_test-dev``, VOC 2007/2012
      splits (read from the VOC xml files) and their ``_cocostyle`` variants (COCO json);
    * ``shapes_train`` / ``shapes_val`` / ``shapes_val_variant``: the embedded synthetic dataset
      (fcos_core/data/datasets/shapes.py), written under ``<data root>/shapes/{train,val}`` by its
      dataset class (fcos_core/data/datasets/embedded.py) the first time it is read (30-45 s on
      two CPU cores for the default 1500 + 200 images). ``shapes_val_variant``: 300 images of the
      same classes drawn by a second renderer (fcos_core/data/datasets/shapes_variant.py: JPEG,
      noise, blur, other clutter), under ``<data root>/shapes/val_variant``, for measuring
      generalisation only (docs/augmentation.md). Environment
      variable ``FCOS_SHAPES_NUM_IMAGES`` (an integer) overrides the number of images of every
      shapes split, e.g. for quick tests; a folder made with another count or seed is replaced;
    * any COCO-format dataset on disk, without editing code: ``"<annotations.json>:<image folder>"``,
      e.g. ``DATASETS.TRAIN "('/data/mine/train.json:/data/mine/images',)"``. Both parts are
      paths, absolute or relative to the working directory; ``file_name`` entries of the json are
      relative to the image folder.

    :meth:`get` returns ``{"factory": <class name in fcos_core.data.datasets>, "args": {...}}``.
    """

    DATA_DIR = "datasets"
    DATASETS = {
        "coco_2017_train": {"img_dir": "coco/train2017", "ann_file": "coco/annotations/instances_train2017.json"},
        "coco_2017_val": {"img_dir": "coco/val2017", "ann_file": "coco/annotations/instances_val2017.json"},
        # test-dev has no annotations: for producing result files only
        "coco_2017_test-dev": {
            "img_dir": "coco/test2017",
            "ann_file": "coco/annotations/image_info_test-dev2017.json",
        },
        "coco_2014_train": {"img_dir": "coco/train2014", "ann_file": "coco/annotations/instances_train2014.json"},
        "coco_2014_val": {"img_dir": "coco/val2014", "ann_file": "coco/annotations/instances_val2014.json"},
        "coco_2014_minival": {"img_dir": "coco/val2014", "ann_file": "coco/annotations/instances_minival2014.json"},
        "coco_2014_valminusminival": {
            "img_dir": "coco/val2014",
            "ann_file": "coco/annotations/instances_valminusminival2014.json",
        },
        "voc_2007_train": {"data_dir": "voc/VOC2007", "split": "train"},
        "voc_2007_val": {"data_dir": "voc/VOC2007", "split": "val"},
        "voc_2007_test": {"data_dir": "voc/VOC2007", "split": "test"},
        "voc_2012_train": {"data_dir": "voc/VOC2012", "split": "train"},
        "voc_2012_val": {"data_dir": "voc/VOC2012", "split": "val"},
        # VOC 2012 test annotations are not public, so there is no _cocostyle json for it
        "voc_2012_test": {"data_dir": "voc/VOC2012", "split": "test"},
    }
    # the _cocostyle VOC splits: VOC converted to COCO json, read by COCODataset
    for _year in ("2007", "2012"):
        for _split in ("train", "val", "test"):
            if (_year, _split) != ("2012", "test"):
                DATASETS["voc_{}_{}_cocostyle".format(_year, _split)] = {
                    "img_dir": "voc/VOC{}/JPEGImages".format(_year),
                    "ann_file": "voc/VOC{0}/Annotations/pascal_{1}{0}.json".format(_year, _split),
                }
    del _year, _split
    # embedded synthetic splits: folder under <data root>/shapes, default image count, seed
    SHAPES = {
        "shapes_train": {"split": "train", "num_images": 1500, "seed": 1},
        "shapes_val": {"split": "val", "num_images": 200, "seed": 2},
        # the same classes drawn by a second renderer (evaluation only: never in DATASETS.TRAIN)
        "shapes_val_variant": {"split": "val_variant", "num_images": 300, "seed": 3,
                               "factory": "ShapesVariantDataset"},
    }
    JSON_SEPARATOR = ".json:"

    @staticmethod
    def data_dir():
        """The data root: ``$FCOS_DATA_DIR`` if set (and not empty), else ``DATA_DIR``."""
        return os.environ.get("FCOS_DATA_DIR") or DatasetCatalog.DATA_DIR

    @staticmethod
    def names():
        """Every catalog name, sorted (the json path form is not listed)."""
        return sorted(list(DatasetCatalog.DATASETS) + list(DatasetCatalog.SHAPES))

    @staticmethod
    def get(name):
        """``{"factory": str, "args": dict}`` for the dataset ``name`` (see the class docstring).

        Raises:
            UnknownDatasetError (a KeyError): ``name`` is unknown; the message lists the known names
                and the closest one.
            ValueError / FileNotFoundError: a malformed or missing ``"<json>:<folder>"`` entry.
        """
        if ".json" in name:
            return DatasetCatalog._json_entry(name)
        if name in DatasetCatalog.SHAPES:
            return DatasetCatalog._shapes_entry(name)
        if name not in DatasetCatalog.DATASETS:
            close = difflib.get_close_matches(name, DatasetCatalog.names(), n=1, cutoff=0.5)
            hint = " Did you mean '{}'?".format(close[0]) if close else ""
            raise UnknownDatasetError(
                "Unknown dataset '{}'.{} Known names: {}; or a COCO json given as "
                "'<annotations.json>:<image folder>'.".format(name, hint, ", ".join(DatasetCatalog.names())))
        root = DatasetCatalog.data_dir()
        attrs = DatasetCatalog.DATASETS[name]
        if "data_dir" in attrs:
            args = dict(data_dir=os.path.join(root, attrs["data_dir"]), split=attrs["split"])
            return dict(factory="PascalVOCDataset", args=args)
        args = dict(root=os.path.join(root, attrs["img_dir"]), ann_file=os.path.join(root, attrs["ann_file"]))
        return dict(factory="COCODataset", args=args)

    @staticmethod
    def _json_entry(name):
        """The COCODataset entry for ``"<annotations.json>:<image folder>"``."""
        cut = name.find(DatasetCatalog.JSON_SEPARATOR)
        if cut < 0 or not name[cut + len(DatasetCatalog.JSON_SEPARATOR):]:
            raise ValueError(
                "Dataset '{}': a COCO json dataset is given as '<annotations.json>:<image folder>', "
                "e.g. '/data/mine/train.json:/data/mine/images'".format(name))
        ann_file = name[:cut + len(".json")]
        img_dir = name[cut + len(DatasetCatalog.JSON_SEPARATOR):]
        if not os.path.isfile(ann_file):
            raise FileNotFoundError(
                "Dataset '{}': annotation file {} not found".format(name, os.path.abspath(ann_file)))
        if not os.path.isdir(img_dir):
            raise FileNotFoundError(
                "Dataset '{}': image folder {} not found".format(name, os.path.abspath(img_dir)))
        return dict(factory="COCODataset", args=dict(root=img_dir, ann_file=ann_file))

    @staticmethod
    def _shapes_entry(name):
        """The ShapesDataset entry of a shapes split: its folder, image count and seed (the dataset
        class writes the split there on first use; the catalog only names it)."""
        attrs = DatasetCatalog.SHAPES[name]
        num_images = attrs["num_images"]
        override = os.environ.get("FCOS_SHAPES_NUM_IMAGES")
        if override:
            try:
                num_images = int(override)
            except ValueError:
                msg = "FCOS_SHAPES_NUM_IMAGES must be an integer, got {!r}".format(override)
                raise ValueError(msg) from None
        out_dir = os.path.join(DatasetCatalog.data_dir(), "shapes", attrs["split"])
        factory = attrs.get("factory", "ShapesDataset")
        return dict(factory=factory, args=dict(out_dir=out_dir, num_images=num_images, seed=attrs["seed"]))


class ModelCatalog:
    """Download addresses of the Detectron (Caffe2) ImageNet initialisations used by the original
    configs (``catalog://ImageNetPretrained/<name>``): ``.pkl`` files that need the original's settings
    (BGR 0-255 minus PIXEL_MEAN; STRIDE_IN_1X1 True for the MSRA ResNets). torchvision's ImageNet
    weights have names of their own, ``torchvision://resnet50`` and so on
    (:mod:`fcos_core.utils.imagenet_zoo`); MODEL_ZOO.md lists which configs can use which.
    """

    S3_C2_DETECTRON_URL = "https://dl.fbaipublicfiles.com/detectron"
    C2_IMAGENET_MODELS = {
        "MSRA/R-50": "ImageNetPretrained/MSRA/R-50.pkl",
        "MSRA/R-50-GN": "ImageNetPretrained/47261647/R-50-GN.pkl",
        "MSRA/R-101": "ImageNetPretrained/MSRA/R-101.pkl",
        "MSRA/R-101-GN": "ImageNetPretrained/47592356/R-101-GN.pkl",
        "FAIR/20171220/X-101-32x8d": "ImageNetPretrained/20171220/X-101-32x8d.pkl",
        "FAIR/20171220/X-101-64x4d": "ImageNetPretrained/20171220/X-101-64x4d.pkl",
    }

    @staticmethod
    def get(name):
        """The URL behind a catalog name (the part after ``catalog://``)."""
        prefix = "ImageNetPretrained/"
        if name.startswith(prefix) and name[len(prefix):] in ModelCatalog.C2_IMAGENET_MODELS:
            return "/".join([ModelCatalog.S3_C2_DETECTRON_URL, ModelCatalog.C2_IMAGENET_MODELS[name[len(prefix):]]])
        known = sorted(prefix + k for k in ModelCatalog.C2_IMAGENET_MODELS)
        raise KeyError(f"unknown catalog name 'catalog://{name}'; known names: {', '.join(known)}")


def results_folder_name(name):
    """A folder name for the results of dataset ``name`` (``OUTPUT_DIR/inference/<folder>``): the
    name itself for catalog names; for ``"<annotations.json>:<image folder>"`` the json's stem and a
    short hash of the whole name (``"val-3f2a9c1e"``), so that results stay under OUTPUT_DIR and two
    jsons of the same stem do not share a folder."""
    if DatasetCatalog.JSON_SEPARATOR not in name and os.sep not in name and "/" not in name:
        return name
    stem = os.path.splitext(os.path.basename(name.split(DatasetCatalog.JSON_SEPARATOR)[0]))[0] or "dataset"
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return "{}-{}".format(re.sub(r"[^A-Za-z0-9._-]+", "_", stem), digest)
