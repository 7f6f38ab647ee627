"""Folding the backbone's batch norms into the convolutions before them, for inference.

At test time a FrozenBatchNorm2d (the ResNet bodies of the FCOS configs, MODEL.RESNETS.* with
the default "FrozenBN") or an eval-mode BatchNorm2d (the MNV2 configs, MODEL.USE_SYNCBN) is a
per-channel affine map, so ``bn(conv(x))`` is one convolution with changed weights and a bias:
one pass over the activation fewer per norm (TEST.FUSE_FROZEN_BN).

The folded model is a copy that differs in its state dict (convs gain a ``bias``, norms become
``nn.Identity`` with no keys), so it is only ever used for inference: it is never trained and
never given to a checkpointer, which keeps saving and loading the original keys.
"""
import copy

from torch import nn

from fcos_core.layers.batch_norm import FrozenBatchNorm2d, fuse_conv_bn

FOLDABLE_NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d, nn.SyncBatchNorm)


def conv_bn_pairs(module):
    """Names ``(conv, norm)`` of the direct children of ``module`` where the norm follows the conv.

    Two layouts, the ones our backbones use, are recognised (registration order alone does not
    say which runs after which, so nothing else is guessed):

    * attributes ``conv<k>`` and ``bn<k>`` (the ResNet stem and blocks: ``conv1``/``bn1``, ...);
    * consecutive entries ``i``, ``i + 1`` of an ``nn.Sequential`` (``downsample.0``/``.1``,
      the MobileNetV2 ``conv`` blocks and stem).

    Only a plain ``nn.Conv2d`` followed by a foldable norm with running statistics over its
    output channels counts: a deformable conv (DFConv2d) and GroupNorm are left alone.
    """
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        candidates = zip(names, names[1:])
    else:
        candidates = [(name, "bn" + name[4:]) for name in children if name.startswith("conv") and name[4:].isdigit()]
    pairs = []
    for conv_name, bn_name in candidates:
        conv, bn = children.get(conv_name), children.get(bn_name)
        if (type(conv) is nn.Conv2d and isinstance(bn, FOLDABLE_NORMS)
                and getattr(bn, "running_var", None) is not None  # BatchNorm2d(track_running_stats=False)
                and bn.num_features == conv.out_channels):
            pairs.append((conv_name, bn_name))
    return pairs


def fuse_conv_bn_for_inference(model, inplace=False):
    """The model with every recognised conv + norm pair folded into one conv (inference only).

    Args:
        model: an ``nn.Module`` (a whole detector or a backbone body); a DistributedDataParallel
            wrapper is looked through.
        inplace: edit ``model`` itself instead of a deep copy. Only for a model that is used for
            nothing else afterwards: its state dict no longer loads into a fresh model.

    Returns:
        The folded model, in eval mode (a trainable BatchNorm2d is folded with its running
        statistics, which is what it computes in eval mode). Outputs equal the original's in
        eval mode up to float rounding (about 1e-6 relative per layer in float32). See
        :func:`conv_bn_pairs` for which pairs are folded; the norm becomes ``nn.Identity``.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        for conv_name, bn_name in conv_bn_pairs(module):
            setattr(module, conv_name, fuse_conv_bn(getattr(module, conv_name), getattr(module, bn_name)))
            setattr(module, bn_name, nn.Identity())
    return model


def count_foldable_pairs(model):
    """Number of conv + norm pairs :func:`fuse_conv_bn_for_inference` would fold in ``model``."""
    return sum(len(conv_bn_pairs(m)) for m in model.modules())
