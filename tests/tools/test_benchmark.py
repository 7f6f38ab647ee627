"""Smoke test of tools/benchmark.py on a tiny image: the tables have the expected rows and columns.

Not a timing test: nothing here asserts speed.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import fcos_core.utils.env as fcos_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fcos_tools_benchmark", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--size", "64", "96", "--runs", "1", "--warmup", "0", "--threads", str(torch.get_num_threads())]


def test_inference_table(bench, tmp_path, monkeypatch):
    # a CPU without native bfloat16: fp32 rows only, and a line saying why the bf16 rows are not there
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: False)
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
    assert set(saved) == {"info", "inference", "inference_summary"} and saved["info"]["size"] == [64, 96]
    assert saved["inference_summary"]["precision"] is None
    assert "bf16 rows skipped" in saved["inference_summary"]["note"] and "AVX-512 BF16" in saved["inference_summary"]["note"]
    text = out_md.read_text()
    assert "| model | precision | median ms | min ms | ours / this | ours / this, per round | scores above threshold | detections |" in text
    for name in [*bench.INFERENCE_MODELS, bench.TV_TRANSFORM]:
        assert sum(line.startswith(f"| {name} |") for line in text.splitlines()) == 1
    assert "GeneralizedRCNNTransform" in text  # says that torchvision's time includes its transform
    assert sum("bf16 rows skipped" in line for line in text.splitlines()) == 1
    assert "Ours bf16 / torchvision FCOS fp32" not in text


def test_inference_bf16_rows_on_a_cpu_with_native_bf16(bench, monkeypatch):
    """With ``cpu_has_fast_bf16`` (forced here: on a CPU without it bfloat16 is emulated, slow but
    correct) every model also runs in bf16, ours as tools/test_net.py runs it with TEST.AMP True."""
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: True)
    threads = torch.get_num_threads()
    result = bench.main(["--only", "inference", *TINY])
    torch.set_num_threads(threads)
    rows = result["inference"]
    names = [*bench.INFERENCE_MODELS, bench.TV_TRANSFORM]
    assert [(r["model"], r["precision"]) for r in rows] == [(n, p) for p in ("fp32", "bf16") for n in names]
    for r in rows:
        assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0 and len(r["times_ms"]) == 1
    by_key = {(r["model"], r["precision"]): r for r in rows}
    for name in bench.INFERENCE_MODELS:  # bf16 ran (a model that failed in bf16 would have detections None)
        assert by_key[(name, "bf16")]["detections"] is not None
    assert by_key[(bench.OURS, "bf16")]["ratio_ours_over_this"] == pytest.approx(1.0)
    s = result["inference_summary"]
    assert s["precision"] == "bf16" and s["note"] is None and s["goal"] == 0.3
    expected = by_key[(bench.OURS, "bf16")]["median_ms"] / by_key[(bench.TV_FCOS, "fp32")]["median_ms"]
    assert s["ours_over_tv_fcos_fp32"] == pytest.approx(expected)
    assert s["ours_over_ours_fp32"] == pytest.approx(by_key[(bench.OURS, "bf16")]["median_ms"] / by_key[(bench.OURS, "fp32")]["median_ms"])
    assert s["goal_met"] == (expected <= 0.3)
    text = bench.markdown(bench.machine_info(bench.parse_args(TINY)), inference=rows, inference_summary=s)
    assert "**Ours bf16 / torchvision FCOS fp32: " in text and "Goal: at most 0.3x" in text
    assert "rows skipped" not in text


def test_ours_bf16_options_are_test_nets(bench, monkeypatch):
    """Ours in bf16 uses fcos_core.engine.inference.make_inference_options with TEST.AMP True: bfloat16
    autocast, channels_last and folded batch norms; fp32: folded batch norms and channels_last
    (SOLVER.CHANNELS_LAST, on by default)."""
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: True)
    _, cfg = bench.build_ours("cpu")
    bf16 = bench._ours_inference_options(cfg, "bf16", "cpu")
    assert (bf16.amp_dtype, bf16.channels_last, bf16.fuse_bn) == (torch.bfloat16, True, True)
    fp32 = bench._ours_inference_options(cfg, "fp32", "cpu")
    assert (fp32.amp_dtype, fp32.channels_last, fp32.fuse_bn) == (None, True, True)
    assert bench.reduced_precision("cpu")[:2] == ("bf16", torch.bfloat16)
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: False)
    label, dtype, why = bench.reduced_precision("cpu")
    assert label is None and dtype is None and "skipped" in why


def test_accuracy_needs_weights(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "accuracy"])


def test_accuracy_part_fp32_and_bf16_ap(bench, tmp_path, monkeypatch):
    """An untrained quickstart model on a 4-image shapes_val: both COCO APs, their difference, the goal.

    ``cpu_has_fast_bf16`` False: the bf16 evaluation still runs (TEST.AMP_DTYPE bfloat16, emulated),
    and says so."""
    fast_bf16 = False
    from fcos_core.config import cfg as default_cfg
    from fcos_core.modeling.detector import build_detection_model

    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: fast_bf16)
    monkeypatch.setenv("FCOS_DATA_DIR", str(tmp_path / "data"))  # never the checkout's datasets/
    monkeypatch.setenv("FCOS_SHAPES_NUM_IMAGES", "4")
    c = default_cfg.clone()
    c.merge_from_file(str(ROOT / bench.ACCURACY_CONFIG))
    c.merge_from_list(["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save({"model": build_detection_model(c).state_dict()}, weights)
    threads = torch.get_num_threads()
    out_json, out_md = tmp_path / "a.json", tmp_path / "a.md"
    result = bench.main(["--only", "accuracy", "--weights", str(weights), "--threads", str(threads),
                         "--json", str(out_json), "--markdown", str(out_md)])
    torch.set_num_threads(threads)
    acc = result["accuracy"]
    assert acc["datasets"] == ["shapes_val"] and list(acc["runs"]) == ["fp32", "bf16"]
    fp32, bf16 = acc["runs"]["fp32"], acc["runs"]["bf16"]
    assert (fp32["autocast"], fp32["test_amp"]) == (None, False)
    assert (bf16["autocast"], bf16["test_amp"], bf16["channels_last"]) == ("bfloat16", True, True)
    assert bf16["emulated"] is (not fast_bf16) and fp32["emulated"] is False
    for run in (fp32, bf16):
        m = run["metrics"]["shapes_val"]
        assert set(m) == set(bench.COCO_AP_KEYS)
        assert 0.0 <= m["AP"] <= 1.0 and run["seconds"] > 0
    diff = 100 * (bf16["metrics"]["shapes_val"]["AP"] - fp32["metrics"]["shapes_val"]["AP"])
    assert acc["ap_difference_points"] == pytest.approx(diff) and math.isfinite(diff)
    assert acc["goal_points"] == 0.5 and acc["goal_met"] == (abs(diff) <= 0.5)
    saved = json.loads(out_json.read_text())
    assert set(saved) == {"info", "accuracy"}
    assert saved["accuracy"]["runs"]["bf16"]["metrics"]["shapes_val"]["AP"] == pytest.approx(bf16["metrics"]["shapes_val"]["AP"])
    text = out_md.read_text()
    assert "| precision | dataset | autocast | channels_last | AP |" in text
    assert "| bf16 | shapes_val | bfloat16" + (" (emulated)" if not fast_bf16 else "") + " | True |" in text
    assert "points** (shapes_val); goal: within 0.5 points:" in text


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


def test_torchvision_channels_last_flag(bench, tmp_path, monkeypatch):
    """--torchvision-channels-last runs torchvision's fp32 rows in channels_last too and says so."""
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: False)
    args = [*TINY, "--torchvision-channels-last"]
    assert bench.parse_args(args).torchvision_channels_last is True
    assert bench.parse_args(TINY).torchvision_channels_last is False
    out_json = tmp_path / "b.json"
    result = bench.main(["--only", "inference", *args, "--json", str(out_json)])
    assert json.loads(out_json.read_text())["info"]["torchvision_channels_last"] is True
    rows = result["inference"]
    assert {r["model"] for r in rows if r["precision"] == "fp32"} >= {bench.OURS, bench.TV_FCOS}
    assert all(r["detections"] is not None for r in rows if r["model"] != bench.TV_TRANSFORM)
    info = bench.machine_info(bench.parse_args(args))
    assert "in channels_last in every precision" in bench.markdown(info, inference=rows)
    assert "in its default NCHW" in bench.markdown(bench.machine_info(bench.parse_args(TINY)), inference=rows)
