"""Named locations of weights (``catalog://`` names of the original configs).

``ModelCatalog.get("ImageNetPretrained/MSRA/R-50")`` returns the download address of the
Detectron ImageNet weights that ``MODEL.WEIGHT: "catalog://ImageNetPretrained/MSRA/R-50"`` names.
"""


class ModelCatalog:
    """Download addresses of the ImageNet initialisations used by the original configs."""

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
