"""Smoke test of tools/benchmark.py on a tiny image: the tables have the expected rows and columns.

Not a timing test: nothing here asserts speed.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fcos_tools_benchmark", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--size", "64", "96", "--runs", "1", "--warmup", "0", "--threads", str(torch.get_num_threads())]


def test_inference_table(bench, tmp_path):
    threads = torch.get_num_threads()
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    result = bench.main(["--only", "inference", *TINY, "--json", str(out_json), "--markdown", str(out_md)])
    torch.set_num_threads(threads)
    rows = result["inference"]
    assert [r["model"] for r in rows] == [*bench.INFERENCE_MODELS, bench.TV_TRANSFORM]
    assert {r["precision"] for r in rows} == {"fp32"}
    for r in rows:
        assert r["median_ms"] > 0 and len(r["times_ms"]) == 1
    by_name = {r["model"]: r for r in rows}
    assert by_name[bench.OURS]["ratio_ours_over_this"] == pytest.approx(1.0)
    assert by_name[bench.OURS]["paired_ratio"] == pytest.approx(1.0)
    for name in bench.INFERENCE_MODELS:
        r = by_name[name]
        assert r["ratio_ours_over_this"] > 0 and r["paired_ratio"] > 0
        # calibration leaves some, but not all, class scores above the threshold
        assert 0 < r["scores_above_threshold"] < r["class_scores"]
        assert r["detections"] is not None and r["detections"] >= 0
    # outputs: JSON and markdown, the markdown with the table header and one line per row
    saved = json.loads(out_json.read_text())
    assert set(saved) == {"info", "inference"} and saved["info"]["size"] == [64, 96]
    text = out_md.read_text()
    assert "| model | precision | median ms | min ms | ours / this | ours / this, per round | scores above threshold | detections |" in text
    for name in [*bench.INFERENCE_MODELS, bench.TV_TRANSFORM]:
        assert sum(line.startswith(f"| {name} |") for line in text.splitlines()) == 1
    assert "GeneralizedRCNNTransform" in text  # says that torchvision's time includes its transform


def test_train_table_and_child_memory(bench):
    args = bench.parse_args(["--only", "train", "--no-memory", *TINY])
    rows = bench.bench_train(args)
    assert [r["model"] for r in rows] == list(bench.TRAIN_MODELS)
    for r in rows:
        assert r["median_ms"] > 0 and r["ratio_ours_over_this"] > 0
        assert r["last_loss"] is not None and r["last_loss"] == r["last_loss"]  # finite, not NaN
    # peak memory of one model in its child process
    mem = bench.peak_memory_in_child(bench.OURS, args)
    assert "error" not in mem, mem
    assert mem["peak_step_mib"] > 0 and mem["held_mib"] > 50  # R-50-FPN + head + momentum
    assert mem["peak_total_mib"] == pytest.approx(mem["held_mib"] + mem["peak_step_mib"])
    assert mem["max_rss_mib"] > mem["held_mib"]
    text = bench.markdown(bench.machine_info(args), train=rows)
    assert "| model | precision | median ms | min ms | ours / this | ours / this, per round | peak step MiB |" in text
    assert sum(line.startswith("| " + bench.OURS + " |") for line in text.splitlines()) == 1


def test_ops_part_says_why_not_without_benchmark_ops(bench, monkeypatch, tmp_path):
    args = bench.parse_args(["--only", "ops", *TINY])
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "benchmark.py"))  # a tools/ without benchmark_ops.py
    rows, note = bench.bench_ops(args)
    assert rows == {} and note.startswith("skipped")
    assert "Ops: skipped" in bench.markdown(bench.machine_info(args), ops=rows, ops_note=note)


def test_calibration_hits_the_fraction(bench):
    torch.manual_seed(0)
    model, cfg = bench.build_ours("cpu")
    model.eval()
    x = bench.to_ours(bench.make_image((96, 128), 0), cfg)
    above, total = bench.calibrate(bench.OURS, model, lambda: model([x]), 0.02)
    assert above == pytest.approx(0.02 * total, rel=0.05, abs=2)
    with torch.inference_mode():
        probs = torch.cat([t.flatten() for t in model.rpn.head(model.backbone(x[None]))[0]]).sigmoid()
    assert int((probs > cfg.MODEL.FCOS.INFERENCE_TH).sum()) == pytest.approx(above, abs=2)
