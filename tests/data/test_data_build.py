"""make_data_loader through the config: the shapes catalog entries, json paths, errors."""
import os

import pytest
import torch

from fcos_core.config import load_config
from fcos_core.config.paths_catalog import DatasetCatalog
from fcos_core.data import build, data_skip_counts, make_data_loader
from fcos_core.data.datasets import COCODataset

from test_coco_dataset import write_coco


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """FCOS_DATA_DIR in tmp_path, with 6-image shapes splits so that generation is quick."""
    monkeypatch.setenv("FCOS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FCOS_SHAPES_NUM_IMAGES", "6")
    return tmp_path / "data"


def _cfg(*opts):
    base = ["DATALOADER.NUM_WORKERS", 0, "DATALOADER.SIZE_DIVISIBILITY", 32, "INPUT.MIN_SIZE_TRAIN", (64,),
            "INPUT.MAX_SIZE_TRAIN", 128, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128]
    return load_config(opts=base + list(opts))


def test_train_loader_on_generated_shapes(data_root):
    cfg = _cfg("DATASETS.TRAIN", ("shapes_train",), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 7)
    loader = make_data_loader(cfg, is_train=True, start_iter=2)
    assert os.path.isfile(data_root / "shapes" / "train" / "instances.json")
    assert isinstance(loader.dataset, COCODataset) and len(loader.dataset) == 6 and len(loader) == 7
    batches = list(loader)
    assert len(batches) == 5
    for images, targets, indices in batches:
        assert images.tensors.shape[0] == len(targets) == len(indices) <= 2
        assert images.tensors.shape[-1] % 32 == 0 and images.tensors.shape[-2] % 32 == 0
        # aspect ratio grouping: all landscape or all portrait
        assert len({h >= w for h, w in images.image_sizes}) == 1
        for (h, w), target in zip(images.image_sizes, targets):
            assert target.size == (w, h) and min(h, w) <= 64 and max(h, w) <= 128
            assert ((target.get_field("labels") >= 1) & (target.get_field("labels") <= 6)).all()


def _train_batches(cfg, start_iter=0):
    return [(images.tensors, [t.bbox for t in targets], [int(i) for i in indices])
            for images, targets, indices in make_data_loader(cfg, is_train=True, start_iter=start_iter)]


def test_train_data_is_a_function_of_seed_and_iteration(data_root):
    """Random flips and scales too: with workers, or resumed, the batch of an iteration is the same."""
    opts = ["DATASETS.TRAIN", ("shapes_train",), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 7,
            "INPUT.MIN_SIZE_TRAIN", (48, 56, 64), "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", 0.5,
            "INPUT.BRIGHTNESS", 0.3]
    full = _train_batches(_cfg(*opts))
    assert len(full) == 7
    with_workers = _train_batches(_cfg(*opts, "DATALOADER.NUM_WORKERS", 2))
    resumed = _train_batches(_cfg(*opts), start_iter=4)
    for expected, got in list(zip(full, with_workers)) + list(zip(full[4:], resumed)):
        assert got[2] == expected[2]
        assert torch.equal(got[0], expected[0])
        assert all(torch.equal(a, b) for a, b in zip(got[1], expected[1]))
    assert len(resumed) == 3
    other_seed = _train_batches(_cfg(*opts, "SEED", 99))
    assert [b[2] for b in other_seed] != [b[2] for b in full]


def test_test_loaders_one_per_dataset(data_root):
    cfg = _cfg("DATASETS.TEST", ("shapes_val", "shapes_train"), "TEST.IMS_PER_BATCH", 4)
    loaders = make_data_loader(cfg, is_train=False)
    assert isinstance(loaders, list) and len(loaders) == 2
    assert [os.path.basename(os.path.dirname(lo.dataset.ann_file)) for lo in loaders] == ["val", "train"]
    seen = sorted(i for _, _, indices in loaders[0] for i in indices)
    assert seen == list(range(6))


def test_coco_json_path_in_config(tmp_path, data_root):
    ann_file, img_dir = write_coco(tmp_path / "mine", [(1, 40, 30), (2, 30, 40)], [
        {"image_id": i, "category_id": 1, "bbox": [1, 1, 10, 10]} for i in (1, 2)])
    cfg = _cfg("DATASETS.TEST", ("{}:{}".format(ann_file, img_dir),))
    (loader,) = make_data_loader(cfg, is_train=False)
    assert len(loader.dataset) == 2 and loader.dataset.root == img_dir
    with pytest.raises(ValueError, match="<annotations.json>:<image folder>"):
        DatasetCatalog.get(ann_file)
    with pytest.raises(FileNotFoundError, match="image folder"):
        DatasetCatalog.get(ann_file + ":" + str(tmp_path / "nope"))


def test_unreadable_image_in_a_worker_is_counted(tmp_path, data_root):
    ann_file, img_dir = write_coco(tmp_path / "mine", [(1, 40, 30), (2, 40, 30)], [
        {"image_id": i, "category_id": 1, "bbox": [1, 1, 10, 10]} for i in (1, 2)])
    os.remove(os.path.join(img_dir, "1.png"))
    cfg = _cfg("DATASETS.TRAIN", ("{}:{}".format(ann_file, img_dir),), "SOLVER.IMS_PER_BATCH", 1,
               "SOLVER.MAX_ITER", 4, "DATALOADER.NUM_WORKERS", 1)
    loader = make_data_loader(cfg, is_train=True)
    assert all(indices == (1,) for _, _, indices in loader)
    assert data_skip_counts(loader.dataset) == {"unreadable_image": 1}


def test_unknown_dataset_names_the_closest(data_root):
    with pytest.raises(KeyError, match="Did you mean 'coco_2017_val'") as info:
        make_data_loader(_cfg("DATASETS.TEST", ("coco_2017_vall",)), is_train=False)
    assert "shapes_train" in str(info.value) and "voc_2007_test" in str(info.value)
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        make_data_loader(_cfg(), is_train=True)


def test_catalog_data_root_and_shapes_count(data_root, monkeypatch):
    entry = DatasetCatalog.get("coco_2017_val")
    assert entry["factory"] == "COCODataset"
    assert entry["args"]["root"] == os.path.join(str(data_root), "coco/val2017")
    voc = DatasetCatalog.get("voc_2007_test")
    assert voc == {"factory": "PascalVOCDataset",
                   "args": {"data_dir": os.path.join(str(data_root), "voc/VOC2007"), "split": "test"}}
    monkeypatch.setenv("FCOS_SHAPES_NUM_IMAGES", "lots")
    with pytest.raises(ValueError, match="FCOS_SHAPES_NUM_IMAGES"):
        DatasetCatalog.get("shapes_val")
    monkeypatch.delenv("FCOS_DATA_DIR")
    assert DatasetCatalog.get("coco_2017_val")["args"]["root"] == os.path.join("datasets", "coco/val2017")


def test_batch_must_divide_by_world_size(data_root, monkeypatch):
    monkeypatch.setattr(build, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH \(16\) must be divisible .* \(3\)"):
        make_data_loader(_cfg("DATASETS.TRAIN", ("shapes_train",)), is_train=True)


def test_custom_paths_catalog_file(tmp_path, data_root):
    ann_file, img_dir = write_coco(tmp_path / "mine", [(1, 40, 30)], [
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}])
    catalog = tmp_path / "my_catalog.py"
    catalog.write_text(
        "class DatasetCatalog:\n"
        "    @staticmethod\n"
        "    def get(name):\n"
        "        return {'factory': 'COCODataset', 'args': {'root': %r, 'ann_file': %r}}\n" % (img_dir, ann_file))
    cfg = _cfg("DATASETS.TEST", ("anything",), "PATHS_CATALOG", str(catalog))
    (loader,) = make_data_loader(cfg, is_train=False)
    assert loader.dataset.ann_file == ann_file
