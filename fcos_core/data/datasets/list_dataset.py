"""A list of image files as a dataset, for running a model on images without annotations."""
from PIL import Image

from fcos_core.structures.bounding_box import BoxList


class ListDataset(object):
    """Images from a list of paths, each with a dummy target (one box covering the image).

    Arguments:
        image_lists (list[str]): image paths.
        transforms (callable or None): ``(image, target) -> (image, target)``.

    ``dataset[i]`` is ``(image, target)`` (no index, as in the original).
    """

    def __init__(self, image_lists, transforms=None):
        self.image_lists = image_lists
        self.transforms = transforms

    def __getitem__(self, item):
        with Image.open(self.image_lists[item]) as img:
            img = img.convert("RGB")
        w, h = img.size
        # the transforms expect a target; one xyxy box over the whole image is harmless
        target = BoxList([[0, 0, w - 1, h - 1]], img.size, mode="xyxy")
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target

    def __len__(self):
        return len(self.image_lists)

    def get_img_info(self, item):
        """{"height", "width"} of image ``item``, read from its header (the pixels are not decoded)."""
        with Image.open(self.image_lists[item]) as img:
            w, h = img.size
        return {"height": h, "width": w}
