"""The box conventions an FCOS model can follow (MODEL.FCOS.CONVENTION).

"original": FCOS's (maskrcnn-benchmark's) pixel-inclusive boxes, locations at ``j * s + s // 2``;
"torchvision": torchvision's continuous boxes, anchor centres ``j * (W_pad // W_l)``, ranking on
sqrt(cls * ctr), clipping to W / H. Kept in a module of its own so that the head, its
post-processor, the ONNX post-processing and test-time augmentation check one list.
"""

CONVENTIONS = ("original", "torchvision")


def check_convention(convention):
    """``convention`` itself; ValueError naming MODEL.FCOS.CONVENTION when it is not one of CONVENTIONS."""
    if convention not in CONVENTIONS:
        raise ValueError("MODEL.FCOS.CONVENTION must be one of {}, got {!r}".format(CONVENTIONS, convention))
    return convention
