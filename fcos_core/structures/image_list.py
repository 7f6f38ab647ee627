"""ImageList: a batch of images of different sizes padded into one tensor, with each image's size."""
import math

import torch


class ImageList(object):
    """Images padded to a common size.

    Arguments:
        tensors (Tensor[B, C, H, W]): the padded batch; image i lies in ``tensors[i, :, :h_i, :w_i]``.
        image_sizes (list[tuple[int, int]]): (h_i, w_i) of each image before padding.
    """

    def __init__(self, tensors, image_sizes):
        self.tensors = tensors
        self.image_sizes = image_sizes

    def to(self, *args, **kwargs):
        """An ImageList with ``tensors.to(*args, **kwargs)`` and the same image sizes."""
        return ImageList(self.tensors.to(*args, **kwargs), list(self.image_sizes))

    def __repr__(self):
        return "{}(tensors={}, image_sizes={})".format(
            self.__class__.__name__, tuple(self.tensors.shape), self.image_sizes
        )


def _round_up(value, multiple):
    return int(math.ceil(value / multiple) * multiple)


def _new_batch(like, shape, shared_memory):
    """An uninitialised tensor of ``shape`` with the dtype and device of ``like``; in shared memory
    when ``shared_memory`` (as ``default_collate`` allocates in a DataLoader worker, so that the batch
    is not copied into shared memory again on its way to the main process)."""
    if not shared_memory:
        return like.new_empty(shape)
    storage = like.untyped_storage()._new_shared(math.prod(shape) * like.element_size(), device=like.device)
    return like.new_empty(0).set_(storage).view(shape)


def _pad_batch(images, size_divisible, shared_memory=False):
    """Zero-pad the [C, H_i, W_i] tensors ``images`` bottom/right into one [B, C, H, W] tensor.

    H and W are the largest H_i and W_i, rounded up to a multiple of ``size_divisible`` when > 0.
    The images are copied into their slots and only the padding is zeroed (one write per element);
    ``shared_memory``: the batch is allocated in shared memory (see :func:`_new_batch`).
    """
    if len(images) == 0:
        raise ValueError("to_image_list needs at least one image")
    if any(img.dim() != 3 for img in images):
        raise ValueError("to_image_list expects 3D [C, H, W] tensors, got shapes {}".format(
            [tuple(img.shape) for img in images]))
    max_size = [max(s) for s in zip(*[img.shape for img in images])]
    if size_divisible > 0:
        max_size[1] = _round_up(max_size[1], size_divisible)
        max_size[2] = _round_up(max_size[2], size_divisible)
    batched = _new_batch(images[0], (len(images),) + tuple(max_size), shared_memory)
    for img, pad_img in zip(images, batched):
        c, h, w = img.shape
        pad_img[:c, :h, :w].copy_(img)
        pad_img[c:].zero_()
        pad_img[:c, h:].zero_()
        pad_img[:c, :h, w:].zero_()
    return batched


def to_image_list(tensors, size_divisible=0, shared_memory=False):
    """Batch images into an :class:`ImageList`.

    Arguments:
        tensors: an ImageList (returned as is), a Tensor [C, H, W] or [B, C, H, W], or a list/tuple
            of [C, H, W] tensors (same C) that are zero-padded at the bottom and right to the largest
            H and W.
        size_divisible (int): if > 0, the padded H and W are rounded up to a multiple of it (a
            single tensor is padded too then).
        shared_memory (bool): allocate a padded batch in shared memory (BatchCollator in a
            DataLoader worker).

    Returns:
        ImageList whose ``image_sizes`` are the (h, w) of each input image.
    """
    if isinstance(tensors, ImageList):
        return tensors
    if isinstance(tensors, torch.Tensor):
        if tensors.dim() == 3:
            tensors = tensors[None]
        if tensors.dim() != 4:
            raise ValueError("to_image_list expects a 3D or 4D tensor, got {}D".format(tensors.dim()))
        image_sizes = [tuple(tensors.shape[-2:])] * tensors.shape[0]
        if size_divisible > 0:
            return ImageList(_pad_batch(list(tensors), size_divisible, shared_memory), image_sizes)
        return ImageList(tensors, image_sizes)
    if isinstance(tensors, (tuple, list)):
        image_sizes = [tuple(img.shape[-2:]) for img in tensors]
        return ImageList(_pad_batch(list(tensors), size_divisible, shared_memory), image_sizes)
    raise TypeError("Unsupported type for to_image_list: {}".format(type(tensors)))
