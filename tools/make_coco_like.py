#!/usr/bin/env python
"""Write a synthetic COCO-2017-sized instances json plus small JPEGs (fcos_core.data.datasets.synthetic_coco).

Examples::

    python tools/make_coco_like.py /work/big/coco_like                    # 118,287 images, ~863k boxes, ~455 MB
    python tools/make_coco_like.py /tmp/small --num-images 2000 --broken 3

The folder gets ``annotations.json`` and ``images/`` (one link per file name); it is written as
``<folder>.partial`` and renamed when complete. Progress is logged every ~10% of the images.
"""
import argparse
import logging

from fcos_core.data.datasets.synthetic_coco import COCO_TRAIN2017_IMAGES, make_coco_like


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to create (e.g. /work/big/coco_like)")
    parser.add_argument("--num-images", type=int, default=COCO_TRAIN2017_IMAGES, help="default %(default)s (COCO train2017)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--broken", type=int, default=0, metavar="N",
                        help="add N annotations of each broken kind: a bbox of 3 numbers, an unknown image id, "
                             "an unlisted category")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        out = make_coco_like(args.out_dir, args.num_images, args.seed, args.broken, args.overwrite)
    except FileExistsError as e:
        raise SystemExit("error: {}".format(e))
    print("annotations: {ann_file}\nimages: {root}\n{images} images, {annotations} annotations".format(**out))


if __name__ == "__main__":
    main()
