"""Test-time augmentation (fcos_core.engine.bbox_aug, TEST.BBOX_AUG) merges flips and scales as
the original: flipped boxes come back pixel-inclusive (x -> W - 1 - x), every scale is resized from
the image TTA is given (long side capped at MAX_SIZE) and mapped back to the test-scale image, and
the pool goes through the FCOS post-processor's class-aware NMS and top-k.

A fake detector, whose detections are a known function of the image it sees, makes every box exact;
then a tiny real model runs TTA end to end through ``run_test`` on a generated shapes dataset.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from fcos_core.config import load_config
from fcos_core.data import transforms as T
from fcos_core.data.build import build_dataset, load_dataset_catalog
from fcos_core.data.collate_batch import BatchCollator
from fcos_core.data.datasets.evaluation import load_predictions
from fcos_core.engine.bbox_aug import im_detect_bbox_aug, make_bbox_aug_fn, tta_passes
from fcos_core.engine.defaults import run_test
from fcos_core.engine.inference import compute_on_dataset
from fcos_core.modeling.detector import build_detection_model
from fcos_core.modeling.rpn.fcos.inference import FCOSPostProcessor
from fcos_core.structures.bounding_box import BoxList
from fcos_core.structures.boxlist_ops import boxlist_iou
from fcos_core.structures.image_list import to_image_list

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart" / "fcos_shapes.yaml")


def _ramp(w, h):
    """A [3, h, w] image increasing from left to right, so a flipped copy can be told apart."""
    return torch.linspace(0, 1, w).expand(3, h, w).clone()


class FakeDetector(nn.Module):
    """``detect(h, w, flipped) -> [(x1, y1, x2, y2, label, score), ...]`` in the coordinates of the
    image it is given (h, w: its unpadded size). Records ``seen``: ((h, w), flipped) per image and
    ``padded``: the batch tensor's (H, W). Its ``rpn.box_selector_test`` is the real FCOS
    post-processor (class-aware NMS at 0.6, ``top_n`` detections per image)."""

    def __init__(self, detect, top_n=100):
        super().__init__()
        self.detect = detect
        self.rpn = nn.Module()
        self.rpn.box_selector_test = FCOSPostProcessor(
            pre_nms_thresh=0.05, pre_nms_top_n=1000, nms_thresh=0.6, fpn_post_nms_top_n=top_n, min_size=0,
            num_classes=3)
        self.seen, self.padded = [], []

    def forward(self, images):
        self.padded.append(tuple(images.tensors.shape[-2:]))
        results = []
        for t, (h, w) in zip(images.tensors, images.image_sizes):
            flipped = bool(t[0, 0, 0] > t[0, 0, w - 1])
            self.seen.append(((h, w), flipped))
            dets = self.detect(h, w, flipped)
            boxlist = BoxList(torch.tensor([d[:4] for d in dets], dtype=torch.float32).reshape(-1, 4), (w, h))
            boxlist.add_field("labels", torch.tensor([d[4] for d in dets], dtype=torch.int64))
            boxlist.add_field("scores", torch.tensor([d[5] for d in dets], dtype=torch.float32))
            results.append(boxlist)
        return results


def _run(detect, images, top_n=100, **options):
    """(model, results) of TTA with ``options`` on the ImageList of ``images`` (list of [3, h, w])."""
    model = FakeDetector(detect, top_n)
    options.setdefault("test_size", (80, 1333))
    results = im_detect_bbox_aug(model, to_image_list(images), "cpu", **options)
    return model, results


def _as_rows(result):
    """{label: [[x1, y1, x2, y2, score], ...]} sorted by score, descending."""
    rows = {}
    for box, label, score in zip(result.bbox.tolist(), result.get_field("labels").tolist(),
                                 result.get_field("scores").tolist()):
        rows.setdefault(label, []).append(box + [score])
    return {k: sorted(v, key=lambda r: -r[4]) for k, v in rows.items()}


def _assert_rows(result, expected):
    rows = _as_rows(result)
    assert sorted(rows) == sorted(expected), rows
    for label, want in expected.items():
        torch.testing.assert_close(torch.tensor(rows[label]), torch.tensor(want, dtype=torch.float32),
                                   atol=1e-4, rtol=0)


def test_passes_in_the_original_order():
    assert tta_passes((800, 1333)) == [(800, 1333, False)]
    assert tta_passes((800, 1333), (400, 1200), 2000, hflip=True, scale_hflip=True) == [
        (800, 1333, False), (800, 1333, True), (400, 2000, False), (400, 2000, True), (1200, 2000, False),
        (1200, 2000, True)]


def test_hflip_maps_back_pixel_inclusive_and_merges_duplicates():
    """An object at (10, 20, 40, 50) of a 120 x 80 image is seen mirrored in the flipped pass and
    comes back at the same place: one box, the flipped pass's higher score. A box found only in the
    flipped image at x comes back at 119 - x."""

    def detect(h, w, flipped):
        if not flipped:
            return [(10, 20, 40, 50, 1, 0.6)]
        return [(w - 1 - 40, 20, w - 1 - 10, 50, 1, 0.9), (5, 10, 25, 30, 2, 0.7)]

    model, (result,) = _run(detect, [_ramp(120, 80)], hflip=True)
    assert model.seen == [((80, 120), False), ((80, 120), True)]
    assert result.size == (120, 80) and result.mode == "xyxy"
    _assert_rows(result, {1: [[10, 20, 40, 50, 0.9]], 2: [[119 - 25, 10, 119 - 5, 30, 0.7]]})


def test_hflip_in_the_torchvision_convention_maps_back_continuously():
    """MODEL.FCOS.CONVENTION "torchvision" (continuous boxes clipped to [0, W]): the flipped pass's
    box at x comes back at W - x, so one touching the flipped image's right border (x2 = W) comes
    back at x1 = 0 (not -1), and the mirrored object merges with the unflipped one exactly."""

    def detect(h, w, flipped):
        if not flipped:
            return [(10, 20, 40, 50, 1, 0.6)]
        return [(w - 40, 20, w - 10, 50, 1, 0.9), (100, 10, w, 30, 2, 0.7)]

    _, (result,) = _run(detect, [_ramp(120, 80)], hflip=True, convention="torchvision")
    _assert_rows(result, {1: [[10, 20, 40, 50, 0.9]], 2: [[0, 10, 20, 30, 0.7]]})
    _, (pixel,) = _run(detect, [_ramp(120, 80)], hflip=True)  # the original convention: W - 1 - x
    assert _as_rows(pixel)[2] == [[-1.0, 10.0, 19.0, 30.0, _as_rows(pixel)[2][0][4]]]
    with pytest.raises(ValueError, match="MODEL.FCOS.CONVENTION must be one of .*'tv'"):
        _run(detect, [_ramp(120, 80)], hflip=True, convention="tv")


def test_make_bbox_aug_fn_reads_the_convention():
    """make_bbox_aug_fn passes MODEL.FCOS.CONVENTION on: a box at the flipped image's right border
    comes back at 0 in the torchvision convention, at -1 in the original one."""

    def detect(h, w, flipped):
        return [(w - 20, 10, w, 30, 1, 0.7)] if flipped else []

    images = to_image_list([_ramp(120, 80)])
    opts = ["TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.H_FLIP", "True"]
    for convention, x1 in (("original", -1.0), ("torchvision", 0.0)):
        (result,) = make_bbox_aug_fn(_config(*opts, "MODEL.FCOS.CONVENTION", convention))(
            FakeDetector(detect), images, "cpu")
        assert result.bbox[0, 0].item() == x1


def test_scales_map_back_to_the_test_scale_image():
    """SCALES (40,) on a 120 x 80 image: a 60 x 40 pass, boxes x2; flipped at that scale, a box at x
    of the 60-wide image comes back at (59 - x) x 2."""

    def detect(h, w, flipped):
        if (h, w) != (40, 60):
            return []
        return [(0, 0, 9, 9, 3, 0.5)] if flipped else [(10, 5, 30, 20, 1, 0.8)]

    model, (result,) = _run(detect, [_ramp(120, 80)], scales=(40,), max_size=1000, scale_hflip=True)
    assert model.seen == [((80, 120), False), ((40, 60), False), ((40, 60), True)]
    assert result.size == (120, 80)
    _assert_rows(result, {1: [[20, 10, 60, 40, 0.8]], 3: [[(59 - 9) * 2, 0, 59 * 2, 18, 0.5]]})


def test_max_size_caps_the_long_side():
    """Scale 160 on 120 x 80 would give 240 x 160; MAX_SIZE 200 makes the short side
    round(200 * 80 / 120) = 133 and the long side int(133 * 120 / 80) = 199 (the Resize rule).
    Boxes come back by 120 / 199 in x and 80 / 133 in y."""

    def detect(h, w, flipped):
        return [(19.9, 13.3, 99.5, 66.5, 1, 0.8)] if (h, w) == (133, 199) else []

    model, (result,) = _run(detect, [_ramp(120, 80)], scales=(160,), max_size=200)
    assert [s for s, _ in model.seen] == [(80, 120), (133, 199)]
    _assert_rows(result, {1: [[12, 8, 60, 40, 0.8]]})


def test_every_pass_resizes_the_given_image_per_image_of_a_batch():
    """Given original images (as the original's test loader does with TTA), the test-scale pass and
    each scale are resized from them, image by image: 100 x 66 at test size (64, 100) is 96 x 64, at
    scale 96 it is 145 x 96 (from the 96 x 64 image it would be 144 x 96); 50 x 80 is capped to
    62 x 99, then 96 x 153. Results are in each image's test-scale size; the scale pass scores higher."""

    def detect(h, w, flipped):
        return [(0.1 * w, 0.1 * h, 0.5 * w, 0.5 * h, 1, 0.9 if max(h, w) > 120 else 0.4)]

    model, results = _run(detect, [_ramp(100, 66), _ramp(50, 80)], test_size=(64, 100), scales=(96,))
    assert [s for s, _ in model.seen] == [(64, 96), (99, 62), (96, 145), (153, 96)]
    assert [r.size for r in results] == [(96, 64), (62, 99)]
    _assert_rows(results[0], {1: [[9.6, 6.4, 48, 32, 0.9]]})
    _assert_rows(results[1], {1: [[6.2, 9.9, 31, 49.5, 0.9]]})


def test_nms_is_class_aware():
    """Two classes at the same place are both kept; a same-class overlap (IoU > 0.6) is not."""

    def detect(h, w, flipped):
        if flipped:
            return [(w - 1 - 50, 10, w - 1 - 10, 50, 2, 0.8), (w - 1 - 52, 10, w - 1 - 12, 50, 1, 0.7)]
        return [(10, 10, 50, 50, 1, 0.9)]

    _, (result,) = _run(detect, [_ramp(120, 80)], hflip=True)
    _assert_rows(result, {1: [[10, 10, 50, 50, 0.9]], 2: [[10, 10, 50, 50, 0.8]]})


def test_top_k_caps_the_merged_detections():
    """DETECTIONS_PER_IMG (the post-processor's top-n) 2: the two best of four disjoint boxes from
    two passes are kept."""

    def detect(h, w, flipped):
        if flipped:  # (0, 0, 9, 9) -> (110, 0, 119, 9); (20, 0, 29, 9) -> (90, 0, 99, 9)
            return [(0, 0, 9, 9, 1, 0.9), (20, 0, 29, 9, 2, 0.6)]
        return [(0, 40, 9, 49, 1, 0.8), (20, 40, 29, 49, 3, 0.7)]

    _, (result,) = _run(detect, [_ramp(120, 80)], top_n=2, hflip=True)
    _assert_rows(result, {1: [[110, 0, 119, 9, 0.9], [0, 40, 9, 49, 0.8]]})
    _, (result,) = _run(detect, [_ramp(120, 80)], top_n=100, hflip=True)
    assert len(result) == 4


class RecordingDetector(FakeDetector):
    """A :class:`FakeDetector` that also keeps each unpadded image it is given: ``images``."""

    def __init__(self, detect, top_n=100):
        super().__init__(detect, top_n)
        self.images = []

    def forward(self, images):
        self.images.extend(t[:, :h, :w].clone() for t, (h, w) in zip(images.tensors, images.image_sizes))
        return super().forward(images)


def test_passes_resize_as_the_torchvision_resize_style():
    """INPUT.RESIZE_STYLE "torchvision": every pass is ``TensorResize`` of the given image, sides
    floor(side * scale), bilinear without antialiasing. On 120 x 80: the test scale 40 (scale 0.5,
    60 x 40) and SCALES 160 capped by MAX_SIZE 200 (scale 5/3: 200 x 133, where the original rule
    gives 199 x 133). Boxes come back by 60 / 200 in x and 40 / 133 in y."""

    def detect(h, w, flipped):
        return [(20, 13.3, 100, 66.5, 1, 0.8)] if (h, w) == (133, 200) else []

    image = torch.rand(3, 80, 120, generator=torch.Generator().manual_seed(0))
    model = RecordingDetector(detect)
    (result,) = im_detect_bbox_aug(model, to_image_list([image]), "cpu", (40, 1333), scales=(160,), max_size=200,
                                   resize_style="torchvision")
    assert [s for s, _ in model.seen] == [(40, 60), (133, 200)]
    for seen, (min_size, max_size) in zip(model.images, [(40, 1333), (160, 200)]):
        assert torch.equal(seen, T.TensorResize(min_size, max_size)(image))
    _assert_rows(result, {1: [[6, 4, 30, 20, 0.8]]})
    original = RecordingDetector(detect)
    im_detect_bbox_aug(original, to_image_list([image]), "cpu", (40, 1333), scales=(160,), max_size=200)
    assert [s for s, _ in original.seen] == [(40, 60), (133, 199)]
    # same size at the test scale, other pixels: the original style antialiases
    assert not torch.allclose(model.images[0], original.images[0], atol=1e-3)


def test_make_bbox_aug_fn_reads_the_resize_style():
    images = to_image_list([_ramp(120, 80)])
    opts = ["TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.SCALES", "(160,)", "TEST.BBOX_AUG.MAX_SIZE", "200"]
    for style, scale_size in (("original", (133, 199)), ("torchvision", (133, 200))):
        model = FakeDetector(lambda h, w, flipped: [])
        make_bbox_aug_fn(_config(*opts, "INPUT.RESIZE_STYLE", style))(model, images, "cpu")
        assert [s for s, _ in model.seen] == [(80, 120), scale_size]
    with pytest.raises(ValueError, match="INPUT.RESIZE_STYLE must be one of .*'pil'"):
        make_bbox_aug_fn(_config(*opts, "INPUT.RESIZE_STYLE", "pil"))


def _config(*opts):
    return load_config(QUICKSTART, ["INPUT.MIN_SIZE_TEST", "80", "INPUT.MAX_SIZE_TEST", "1333", *opts])


def test_disabled_is_the_plain_path_and_enabled_reads_the_config():
    def detect(h, w, flipped):  # one object at (10, 20, 40, 50) of the 120 x 80 image, at any scale
        x1, x2 = w / 12, w / 3
        return [(w - 1 - x2, h / 4, w - 1 - x1, h * 5 / 8, 1, 0.95) if flipped else (x1, h / 4, x2, h * 5 / 8, 1, 0.9)]

    images = to_image_list([_ramp(120, 80)], 32)
    loader = [(images, None, [0])]
    assert make_bbox_aug_fn(_config()) is None
    model = FakeDetector(detect)
    plain = compute_on_dataset(model, loader, "cpu", bbox_aug_fn=make_bbox_aug_fn(_config()), fuse_bn=False)
    assert model.seen == [((80, 120), False)]
    fn = make_bbox_aug_fn(_config("TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.H_FLIP", "True",
                                  "TEST.BBOX_AUG.SCALES", "(40,)", "DATALOADER.SIZE_DIVISIBILITY", "32"))
    model = FakeDetector(detect)
    tta = compute_on_dataset(model, loader, "cpu", bbox_aug_fn=fn, fuse_bn=False)
    assert model.seen == [((80, 120), False), ((80, 120), True), ((40, 60), False)]
    assert model.padded == [(96, 128), (96, 128), (64, 64)]  # every pass padded as the plain batches
    assert tta[0].bbox.tolist() == plain[0].bbox.tolist() == [[10, 20, 40, 50]]
    assert plain[0].get_field("scores").tolist() == pytest.approx([0.9])
    assert tta[0].get_field("scores").tolist() == pytest.approx([0.95])


def test_bad_sizes_name_the_key():
    with pytest.raises(ValueError, match="TEST.BBOX_AUG.SCALES"):
        make_bbox_aug_fn(_config("TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.SCALES", "(0,)"))
    with pytest.raises(ValueError, match="TEST.BBOX_AUG.MAX_SIZE"):
        make_bbox_aug_fn(_config("TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.MAX_SIZE", "0"))


TINY = ["MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.FCOS.NUM_CONVS", "1", "INPUT.MIN_SIZE_TEST", "100",
        "INPUT.MAX_SIZE_TEST", "1000", "TEST.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]


def _predictions(tmp, model, name, *opts):
    """run_test's saved predictions (test-scale BoxLists) for the tiny config plus ``opts``."""
    cfg = load_config(QUICKSTART, [*TINY, "OUTPUT_DIR", str(tmp / name), *opts])
    results = run_test(cfg, model, distributed=False)
    assert len(results) == 1 and results[0] is not None
    return load_predictions(tmp / name / "inference" / "shapes_val" / "predictions.pth")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tmp, model, plain predictions): a random tiny quickstart model with plenty of detections, a
    generated 2-image shapes_val and the plain path's predictions on it."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("bbox_aug")
    mp.setenv("FCOS_DATA_DIR", str(tmp / "data"))
    mp.setenv("FCOS_SHAPES_NUM_IMAGES", "2")
    torch.manual_seed(0)
    model = build_detection_model(load_config(QUICKSTART, TINY))
    torch.nn.init.normal_(model.rpn.head.cls_logits.bias, mean=-1.0, std=1.0)
    yield tmp, model, _predictions(tmp, model, "plain")
    mp.undo()


def test_end_to_end_run_test_with_flip_and_scales(tiny):
    """run_test with TEST.BBOX_AUG on a real model: detections for every image, in its test-scale
    image; with no flip and no scale, TTA (which resizes the original image itself, as the loader
    hands it unresized images) gives the plain path's top detections (PIL vs tensor resampling)."""
    tmp, model, plain = tiny
    same = _predictions(tmp, model, "identity", "TEST.BBOX_AUG.ENABLED", "True")
    tta = _predictions(tmp, model, "tta", "TEST.BBOX_AUG.ENABLED", "True", "TEST.BBOX_AUG.H_FLIP", "True",
                       "TEST.BBOX_AUG.SCALES", "(64,)", "TEST.BBOX_AUG.SCALE_H_FLIP", "True")
    assert len(plain) == len(same) == len(tta) == 2
    for p, s, t in zip(plain, same, tta):
        assert len(p) > 0 and len(t) > 0 and t.size == p.size == s.size
        _assert_top_detections_match(p, s)
        assert set(t.fields()) >= {"scores", "labels"}
        assert (t.get_field("scores")[:-1] >= t.get_field("scores")[1:]).all()
        assert len(t) <= 100 and not torch.equal(t.bbox[:len(p)], p.bbox)


def test_end_to_end_from_original_images(tiny):
    """Fed the original images (loader without Resize, as the original's TTA loader), the test-scale
    pass resizes them itself: nearly the plain path's detections (PIL vs tensor resampling)."""
    tmp, model, plain = tiny
    cfg = load_config(QUICKSTART, [*TINY, "TEST.BBOX_AUG.ENABLED", "True"])
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)])
    (dataset,) = build_dataset(["shapes_val"], to_tensor, load_dataset_catalog(cfg.PATHS_CATALOG), is_train=False)
    # one image a batch: two images of other orientations, padded together, change this random
    # model's detections (the test loader groups images by orientation)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=BatchCollator(32))
    out = compute_on_dataset(model, loader, "cpu", bbox_aug_fn=make_bbox_aug_fn(cfg), fuse_bn=False)
    for i, p in enumerate(plain):
        assert out[i].size == p.size and dataset.get_img_info(i)["width"] > p.size[0]  # resized down
        _assert_top_detections_match(p, out[i])


def _assert_top_detections_match(plain, other, k=5):
    """Each of the ``k`` best boxes of ``plain`` has a box of ``other`` with IoU > 0.9."""
    top = plain[plain.get_field("scores").argsort(descending=True)[:k]]
    best = boxlist_iou(top, other).max(dim=1).values
    assert (best > 0.9).all(), best
