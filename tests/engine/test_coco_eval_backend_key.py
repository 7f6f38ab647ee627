"""TEST.COCO_EVAL_BACKEND from the config to the evaluation: run_test (the test after training and
the periodic evaluation) hands it to inference, and train() refuses a missing faster-coco-eval
before it builds anything."""
import sys

import pytest
import torch

from fcos_core.config import cfg as default_cfg
from fcos_core.engine import defaults


class _Loader:
    dataset = None


def test_run_test_passes_the_key_to_inference(monkeypatch):
    calls = []
    monkeypatch.setattr(defaults, "make_data_loader", lambda cfg, is_train, is_distributed: [_Loader()])
    monkeypatch.setattr(defaults, "inference", lambda *args, **kwargs: calls.append(kwargs) or "result")
    for backend in ("pycocotools", "faster_coco_eval"):
        cfg = default_cfg.clone()
        cfg.merge_from_list(["TEST.COCO_EVAL_BACKEND", backend, "DATASETS.TEST", "('shapes_val',)",
                             "OUTPUT_DIR", "", "MODEL.DEVICE", "cpu"])
        assert defaults.run_test(cfg, torch.nn.Identity(), distributed=False) == ["result"]
        assert calls[-1]["coco_eval_backend"] == backend


def test_train_refuses_a_missing_faster_coco_eval_before_building_the_model(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as when it is not installed
    monkeypatch.setattr(defaults, "build_training", lambda *a: pytest.fail("the model must not be built"))
    cfg = default_cfg.clone()
    cfg.merge_from_list(["TEST.COCO_EVAL_BACKEND", "faster_coco_eval", "OUTPUT_DIR", "", "MODEL.DEVICE", "cpu"])
    with pytest.raises(ImportError, match=r"pip install \"fcos_core\[eval\]\""):
        defaults.train(cfg, 0, False)
    cfg.merge_from_list(["TEST.COCO_EVAL_BACKEND", "pycoco"])
    with pytest.raises(ValueError, match="TEST.COCO_EVAL_BACKEND: unknown evaluator 'pycoco'"):
        defaults.train(cfg, 0, False)
