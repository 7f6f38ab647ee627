"""fcos_core.engine.launch: the one config loader of every entry point, and the process-group setup."""
import argparse

import pytest

from fcos_core.config import UnknownConfigKeyError, cfg
from fcos_core.engine.launch import config_from_args, setup_distributed, setup_run

CONFIG = "configs/quickstart/fcos_shapes.yaml"


def _args(config_file="", opts=()):
    return argparse.Namespace(config_file=config_file, opts=list(opts))


def test_config_from_args_returns_a_frozen_copy_and_leaves_the_global_alone():
    before = cfg.dump()
    run = config_from_args(_args(CONFIG, ["SOLVER.MAX_ITER", "7", "MODEL.DEVICE", "cpu"]))
    assert run.SOLVER.MAX_ITER == 7 and run.is_frozen()
    assert run.MODEL.BACKBONE.CONV_BODY != cfg.MODEL.BACKBONE.CONV_BODY  # the file was merged
    assert cfg.dump() == before and not cfg.is_frozen()
    with pytest.raises(AttributeError):
        run.SOLVER.MAX_ITER = 8


def test_config_from_args_names_a_bad_key():
    with pytest.raises(UnknownConfigKeyError, match="SOLVER.MAX_ITR"):
        config_from_args(_args(opts=["SOLVER.MAX_ITR", "7"]))


def test_one_process_joins_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert setup_distributed(0) is False
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert setup_distributed(0) is False


def test_setup_run_writes_the_config_it_ran_with(tmp_path):
    run = config_from_args(_args(CONFIG, ["OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.MAX_ITER", "3"]))
    setup_run(run)
    saved = (tmp_path / "out" / "config.yml").read_text()
    assert "MAX_ITER: 3" in saved and (tmp_path / "out" / "log.txt").exists()
