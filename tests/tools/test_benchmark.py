"""tools/benchmark.py and tools/benchmark_ops.py on tiny inputs, and the parts of fcos_core.benchmark
behind them: the tables have the expected rows and columns.

Not a timing test: nothing here asserts speed.
"""
import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fcos_core.utils.env as fcos_env
from fcos_core.benchmark import ops as ops_mod
from fcos_core.benchmark.accuracy import ACCURACY_CONFIG, COCO_AP_KEYS, bench_accuracy
from fcos_core.benchmark.inference import bench_inference, inference_summary, ours_inference_options, reduced_precision
from fcos_core.benchmark.memory import peak_memory_in_child
from fcos_core.benchmark.models import INFERENCE_MODELS, OURS, TRAIN_MODELS, TV_FCOS, TV_TRANSFORM, build_ours, calibrate, make_image, to_ours
from fcos_core.benchmark.report import dict_table, machine_info, markdown, markdown_table, ops_markdown
from fcos_core.benchmark.train import bench_train

ROOT = Path(__file__).resolve().parents[2]
THREADS = torch.get_num_threads()
TINY = ["--size", "64", "96", "--runs", "1", "--warmup", "0", "--threads", str(THREADS)]


def tiny_args(**overrides):
    """The options tools/benchmark.py parses from TINY (the library's parts take them as a namespace)."""
    args = dict(device="cpu", threads=THREADS, size=[64, 96], runs=1, warmup=0, only=None, candidate_fraction=0.01, seed=0,
                torchvision_channels_last=False, no_memory=True, weights=None, accuracy_config=ACCURACY_CONFIG,
                json=None, markdown=None, child=None)
    args.update(overrides)
    return argparse.Namespace(**args)


def run_script(name, *argv):
    """Run tools/<name> as a command; (return code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / name), *argv], cwd=ROOT, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def test_inference_command_writes_json_and_markdown(tmp_path):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    rc, stdout, stderr = run_script("benchmark.py", "--only", "inference", *TINY, "--json", str(out_json), "--markdown", str(out_md))
    assert rc == 0, stderr
    saved = json.loads(out_json.read_text())
    assert set(saved) == {"info", "inference", "inference_summary"} and saved["info"]["size"] == [64, 96]
    assert saved["info"]["command"].startswith("python tools/benchmark.py --only inference")
    fast = fcos_env.cpu_has_fast_bf16()
    precisions = ["fp32", "bf16"] if fast else ["fp32"]
    names = [*INFERENCE_MODELS, TV_TRANSFORM]
    assert [(r["model"], r["precision"]) for r in saved["inference"]] == [(n, p) for p in precisions for n in names]
    text = out_md.read_text()
    assert stdout.strip() == text.strip()
    assert "| model | precision | median ms | min ms | ours / this | ours / this, per round | scores above threshold | detections |" in text
    assert "|---|---|---:|---:|---:|---:|---:|---:|" in text
    for name in names:
        assert sum(line.startswith(f"| {name} | fp32 |") for line in text.splitlines()) == 1
    assert ("bf16 rows skipped" in text) is (not fast)


def test_inference_table(monkeypatch):
    # a CPU without native bfloat16: fp32 rows only, and a line saying why the bf16 rows are not there
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: False)
    args = tiny_args()
    rows = bench_inference(args)
    torch.set_num_threads(THREADS)
    assert [r["model"] for r in rows] == [*INFERENCE_MODELS, TV_TRANSFORM]
    assert {r["precision"] for r in rows} == {"fp32"}
    for r in rows:
        assert r["median_ms"] > 0 and len(r["times_ms"]) == 1
    by_name = {r["model"]: r for r in rows}
    assert by_name[OURS]["ratio_ours_over_this"] == pytest.approx(1.0)
    assert by_name[OURS]["paired_ratio"] == pytest.approx(1.0)
    for name in INFERENCE_MODELS:
        r = by_name[name]
        assert r["ratio_ours_over_this"] > 0 and r["paired_ratio"] > 0
        # calibration leaves some, but not all, class scores above the threshold
        assert 0 < r["scores_above_threshold"] < r["class_scores"]
        assert r["detections"] is not None and r["detections"] >= 0
    summary = inference_summary(rows, "cpu")
    assert summary["precision"] is None
    assert "bf16 rows skipped" in summary["note"] and "AVX-512 BF16" in summary["note"]
    text = markdown(machine_info(args), inference=rows, inference_summary=summary)
    for name in [*INFERENCE_MODELS, TV_TRANSFORM]:
        assert sum(line.startswith(f"| {name} |") for line in text.splitlines()) == 1
    assert "GeneralizedRCNNTransform" in text  # says that torchvision's time includes its transform
    assert sum("bf16 rows skipped" in line for line in text.splitlines()) == 1
    assert "Ours bf16 / torchvision FCOS fp32" not in text


def test_inference_bf16_rows_on_a_cpu_with_native_bf16(monkeypatch):
    """With ``cpu_has_fast_bf16`` (forced here: on a CPU without it bfloat16 is emulated, slow but
    correct) every model also runs in bf16, ours as tools/test_net.py runs it with TEST.AMP True."""
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: True)
    args = tiny_args()
    rows = bench_inference(args)
    torch.set_num_threads(THREADS)
    names = [*INFERENCE_MODELS, TV_TRANSFORM]
    assert [(r["model"], r["precision"]) for r in rows] == [(n, p) for p in ("fp32", "bf16") for n in names]
    for r in rows:
        assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0 and len(r["times_ms"]) == 1
    by_key = {(r["model"], r["precision"]): r for r in rows}
    for name in INFERENCE_MODELS:  # bf16 ran (a model that failed in bf16 would have detections None)
        assert by_key[(name, "bf16")]["detections"] is not None
    assert by_key[(OURS, "bf16")]["ratio_ours_over_this"] == pytest.approx(1.0)
    s = inference_summary(rows, "cpu")
    assert s["precision"] == "bf16" and s["note"] is None and s["goal"] == 0.3
    expected = by_key[(OURS, "bf16")]["median_ms"] / by_key[(TV_FCOS, "fp32")]["median_ms"]
    assert s["ours_over_tv_fcos_fp32"] == pytest.approx(expected)
    assert s["ours_over_ours_fp32"] == pytest.approx(by_key[(OURS, "bf16")]["median_ms"] / by_key[(OURS, "fp32")]["median_ms"])
    assert s["goal_met"] == (expected <= 0.3)
    text = markdown(machine_info(args), inference=rows, inference_summary=s)
    assert "**Ours bf16 / torchvision FCOS fp32: " in text and "Goal: at most 0.3x" in text
    assert "rows skipped" not in text


def test_ours_bf16_options_are_test_nets(monkeypatch):
    """Ours in bf16 uses fcos_core.engine.inference.make_inference_options with TEST.AMP True: bfloat16
    autocast, channels_last and folded batch norms; fp32: folded batch norms and channels_last
    (SOLVER.CHANNELS_LAST, on by default)."""
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: True)
    _, cfg = build_ours("cpu")
    bf16 = ours_inference_options(cfg, "bf16", "cpu")
    assert (bf16.amp_dtype, bf16.channels_last, bf16.fuse_bn) == (torch.bfloat16, True, True)
    fp32 = ours_inference_options(cfg, "fp32", "cpu")
    assert (fp32.amp_dtype, fp32.channels_last, fp32.fuse_bn) == (None, True, True)
    assert reduced_precision("cpu")[:2] == ("bf16", torch.bfloat16)
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: False)
    label, dtype, why = reduced_precision("cpu")
    assert label is None and dtype is None and "skipped" in why


def test_accuracy_command_needs_weights():
    rc, _, stderr = run_script("benchmark.py", "--only", "accuracy")
    assert rc == 2 and "--only accuracy needs --weights PATH" in stderr


def test_accuracy_part_fp32_and_bf16_ap(tmp_path, monkeypatch):
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
    c.merge_from_file(str(ROOT / ACCURACY_CONFIG))
    c.merge_from_list(["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save({"model": build_detection_model(c).state_dict()}, weights)
    args = tiny_args(only="accuracy", weights=str(weights))
    acc = bench_accuracy(args)
    torch.set_num_threads(THREADS)
    assert acc["datasets"] == ["shapes_val"] and list(acc["runs"]) == ["fp32", "bf16"]
    assert acc["config"] == ACCURACY_CONFIG
    fp32, bf16 = acc["runs"]["fp32"], acc["runs"]["bf16"]
    assert (fp32["autocast"], fp32["test_amp"]) == (None, False)
    assert (bf16["autocast"], bf16["test_amp"], bf16["channels_last"]) == ("bfloat16", True, True)
    assert bf16["emulated"] is (not fast_bf16) and fp32["emulated"] is False
    for run in (fp32, bf16):
        m = run["metrics"]["shapes_val"]
        assert set(m) == set(COCO_AP_KEYS)
        assert 0.0 <= m["AP"] <= 1.0 and run["seconds"] > 0
    diff = 100 * (bf16["metrics"]["shapes_val"]["AP"] - fp32["metrics"]["shapes_val"]["AP"])
    assert acc["ap_difference_points"] == pytest.approx(diff) and math.isfinite(diff)
    assert acc["goal_points"] == 0.5 and acc["goal_met"] == (abs(diff) <= 0.5)
    assert json.loads(json.dumps(acc))["runs"]["bf16"]["metrics"]["shapes_val"]["AP"] == pytest.approx(bf16["metrics"]["shapes_val"]["AP"])
    text = markdown(machine_info(args), accuracy=acc)
    assert "| precision | dataset | autocast | channels_last | AP | AP50 | AP75 | APs | APm | APl | seconds |" in text
    assert "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|" in text
    assert "| bf16 | shapes_val | bfloat16" + (" (emulated)" if not fast_bf16 else "") + " | True |" in text
    assert "points** (shapes_val); goal: within 0.5 points:" in text


def test_train_table_and_child_memory():
    args = tiny_args(only="train")
    rows = bench_train(args)
    assert [r["model"] for r in rows] == list(TRAIN_MODELS)
    for r in rows:
        assert r["median_ms"] > 0 and r["ratio_ours_over_this"] > 0
        assert r["last_loss"] is not None and r["last_loss"] == r["last_loss"]  # finite, not NaN
    # peak memory of one model in its child process (python -m fcos_core.benchmark.memory --child)
    mem = peak_memory_in_child(OURS, args)
    assert "error" not in mem, mem
    assert mem["peak_step_mib"] > 0 and mem["held_mib"] > 50  # R-50-FPN + head + momentum
    assert mem["peak_total_mib"] == pytest.approx(mem["held_mib"] + mem["peak_step_mib"])
    assert mem["max_rss_mib"] > mem["held_mib"]
    text = markdown(machine_info(args), train=rows)
    assert "| model | precision | median ms | min ms | ours / this | ours / this, per round | peak step MiB |" in text
    assert "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" in text
    assert sum(line.startswith("| " + OURS + " |") for line in text.splitlines()) == 1
    assert "Peak memory: not measured." in text  # --no-memory


def test_child_memory_reports_an_error_for_an_unknown_model():
    mem = peak_memory_in_child("no such model", tiny_args())
    assert set(mem) == {"error"} and mem["error"]


def test_markdown_table_builder():
    lines = markdown_table(["a", "b", "c"], [[1, "x", 2.5], "| raw | line | kept |"], "lrc")
    assert lines == ["| a | b | c |", "|---|---:|:---:|", "| 1 | x | 2.5 |", "| raw | line | kept |"]
    assert markdown_table(["a", "b"], [])[1] == "|---|---|"  # left-aligned by default
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [[1]])
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [], "l")
    assert dict_table([]) == []
    assert dict_table([{"n": 3, "ms": 1.23456, "bad": float("nan")}]) == ["| n | ms | bad |", "|---|---|---|", "| 3 | 1.235 | n/a |"]


def test_ops_part_and_its_tables(monkeypatch):
    """The ops part (fcos_core.benchmark.ops, what tools/benchmark_ops.py runs) on small inputs: a row
    per size, our continuous NMS equal to torchvision's, the same focal-loss gradients."""
    monkeypatch.setattr(ops_mod, "NMS_SIZES", (50, 200))
    monkeypatch.setattr(ops_mod, "FOCAL_SIZES", ((300, 80),))
    args = tiny_args(only="ops")
    rows, note = ops_mod.bench_ops(args)
    assert list(rows) == ["ml_nms", "sigmoid_focal_loss"] and "median of 5 runs per op" in note
    assert [r["boxes"] for r in rows["ml_nms"]] == [50, 200]
    assert all(r["continuous_equals_torchvision"] and r["ours_legacy_ms"] > 0 for r in rows["ml_nms"])
    (focal,) = rows["sigmoid_focal_loss"]
    assert focal["shape"] == "300x80" and focal["grad_max_abs_diff"] < 1e-5 and focal["ours_ms"] > 0
    text = markdown(machine_info(args), ops=rows, ops_note=note)
    assert f"Ops: {note}" in text and "ml_nms:" in text and "| boxes | classes | ours_legacy_ms |" in text
    info = ops_mod.ops_info("cpu", THREADS, 5, 1)
    table = ops_markdown(info, rows["ml_nms"], rows["sigmoid_focal_loss"]).splitlines()
    assert "|---:|---:|---:|---:|---:|---:|:---:|" in table
    assert sum(line.startswith("| 50 | ") and line.endswith(" | yes |") for line in table) == 1
    assert sum(line.startswith("| 300x80 | ") for line in table) == 1


def test_ops_command(tmp_path):
    out_json = tmp_path / "ops.json"
    rc, stdout, stderr = run_script("benchmark_ops.py", "--repeat", "1", "--warmup", "0", "--threads", str(THREADS), "--json", str(out_json))
    assert rc == 0, stderr
    saved = json.loads(out_json.read_text())
    assert set(saved) == {"info", "ml_nms", "sigmoid_focal_loss"}
    assert [r["boxes"] for r in saved["ml_nms"]] == list(ops_mod.NMS_SIZES)
    assert saved["info"]["repeat"] == 1 and saved["info"]["backend_ml_nms"]
    assert "| boxes | ours legacy +1 | ours continuous | torchvision |" in stdout
    assert "| 20267x80 |" in stdout


def test_calibration_hits_the_fraction():
    torch.manual_seed(0)
    model, cfg = build_ours("cpu")
    model.eval()
    x = to_ours(make_image((96, 128), 0), cfg)
    above, total = calibrate(OURS, model, lambda: model([x]), 0.02)
    assert above == pytest.approx(0.02 * total, rel=0.05, abs=2)
    with torch.inference_mode():
        probs = torch.cat([t.flatten() for t in model.rpn.head(model.backbone(x[None]))[0]]).sigmoid()
    assert int((probs > cfg.MODEL.FCOS.INFERENCE_TH).sum()) == pytest.approx(above, abs=2)


def test_torchvision_channels_last_flag(monkeypatch):
    """--torchvision-channels-last runs torchvision's fp32 rows in channels_last too and says so."""
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: False)
    args = tiny_args(torchvision_channels_last=True)
    rows = bench_inference(args)
    torch.set_num_threads(THREADS)
    assert machine_info(args)["torchvision_channels_last"] is True
    assert {r["model"] for r in rows if r["precision"] == "fp32"} >= {OURS, TV_FCOS}
    assert all(r["detections"] is not None for r in rows if r["model"] != TV_TRANSFORM)
    assert "in channels_last in every precision" in markdown(machine_info(args), inference=rows)
    assert "in its default NCHW" in markdown(machine_info(tiny_args()), inference=rows)
