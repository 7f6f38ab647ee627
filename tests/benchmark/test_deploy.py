"""The deploy part of the benchmark (fcos_core/benchmark/deploy.py, tools/benchmark.py --only deploy) at a
tiny size: its rows, ratios consistent with the times, skip reasons, the convolution FLOP count, the CPU's
convolution throughput and the int8 calibration input. Not a timing test: nothing here asserts speed.

The TEST.COMPILE rows are left out of the runs (``--deploy-skip compiled``: compiling takes minutes);
their logic (ratios, the summary against the goals) is checked on given times.
"""
import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fcos_core.utils.env as fcos_env
from fcos_core.benchmark import conv_throughput as ct
from fcos_core.benchmark import deploy
from fcos_core.benchmark.models import build_ours, make_image
from fcos_core.benchmark.report import ISA_FLAGS, cpu_info, markdown
from fcos_core.export.quantize import ArrayCalibrationReader

ROOT = Path(__file__).resolve().parents[2]
THREADS = torch.get_num_threads()
RAN = lambda r: r["skipped"] is None  # noqa: E731


def _args(**overrides):
    args = dict(device="cpu", threads=THREADS, size=[64, 96], runs=1, warmup=0, seed=0, candidate_fraction=0.01,
                deploy_skip=["compiled"], int8_calib_images=2)
    args.update(overrides)
    return argparse.Namespace(**args)


def _check_ratios(rows):
    """Every ratio of a row that ran is its time over the reference row's (one round: the median is the time)."""
    by_key = {(r["path"], r["precision"]): r for r in rows}
    ours = by_key[(deploy.OURS_PATH, "fp32")]
    for r in filter(RAN, rows):
        assert r["seconds"] > 0 and r["times_s"] == [r["seconds"]] and r["detections"] > 0
        assert r["vs_ours_fp32"] == pytest.approx(r["seconds"] / ours["seconds"])
        assert r["vs_ours_fp32_per_round"] == pytest.approx(r["vs_ours_fp32"])
        openvino = by_key[(deploy.OV_PATH, r["precision"])]
        if RAN(openvino):
            assert r["vs_openvino"] == pytest.approx(r["seconds"] / openvino["seconds"])
        else:
            assert math.isnan(r["vs_openvino"])


def test_deploy_command_rows_ratios_and_outputs(tmp_path):
    out_json, out_md = tmp_path / "d.json", tmp_path / "d.md"
    cmd = [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--only", "deploy", "--size", "64", "96", "--runs", "1",
           "--warmup", "0", "--threads", str(THREADS), "--deploy-skip", "compiled", "--int8-calib-images", "2",
           "--json", str(out_json), "--markdown", str(out_md)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out_json.read_text())
    assert set(saved) == {"info", "deploy"}
    rows = saved["deploy"]["rows"]
    assert [(r["path"], r["precision"]) for r in rows] == [(p, prec) for p, prec, _ in deploy.ROWS]
    native = fcos_env.cpu_has_fast_bf16()
    for r in rows:
        if r["path"] in (deploy.COMPILED_PATH, deploy.WINOGRAD_COMPILED_PATH):
            assert r["skipped"] == "not run (--deploy-skip compiled)"
        elif r["precision"] == "bf16" and not native:
            assert "bf16 rows skipped: this CPU has neither AVX-512 BF16 nor AMX" in r["skipped"]
        else:  # onnxruntime and openvino are in the dev extra: every other row runs here
            assert RAN(r), r
    _check_ratios(rows)
    by_key = {(r["path"], r["precision"]): r for r in rows}  # Winograd: the direct convolutions' detections
    assert by_key[(deploy.WINOGRAD_PATH, "fp32")]["detections"] == by_key[(deploy.OURS_PATH, "fp32")]["detections"]
    gflop, peak = saved["deploy"]["conv_gflop"], saved["deploy"]["throughput_gflops"]
    assert gflop[deploy.OURS_PATH] > 0 and gflop[deploy.TV_PATH] > 0
    for r in filter(RAN, rows):
        model = deploy.TV_PATH if r["path"] == deploy.TV_PATH else deploy.OURS_PATH
        assert r["conv_gflops"] == pytest.approx(gflop[model] / r["seconds"])
        if peak[r["precision"]] is None:  # int8 without torch's oneDNN quantized engine: blank, with a note
            assert math.isnan(r["conv_fraction"]) and saved["deploy"]["notes"]
        else:
            assert r["conv_fraction"] == pytest.approx(gflop[model] / r["seconds"] / peak[r["precision"]])
    assert saved["deploy"]["summary"]["fp32"]["met"] is None  # the compiled rows did not run
    text = out_md.read_text()
    assert proc.stdout.strip() == text.strip()
    flags = cpu_info()["isa"]
    for flag in deploy.HEADER_FLAGS:
        assert "{} {}".format(flag, "present" if flags[flag] else "absent") in text
    assert "| path | precision | s/img | best round s | vs ours fp32 | vs OpenVINO same precision | conv GFLOP/s | conv throughput fraction |" in text
    assert "- ours, TEST.COMPILE fp32: not run (--deploy-skip compiled)" in text
    assert "goal at most 1.0x: n/a (a row did not run)" in text and "goal at most 1.2x" in text
    assert "deploy: quantizing the export to int8, calibrated on 2 variants" in proc.stderr  # progress


def test_missing_runtimes_and_cpus_without_bf16_skip_their_rows_with_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(fcos_env, "cpu_has_fast_bf16", lambda: False)
    result = deploy.bench_deploy(_args(deploy_skip=["compiled", "winograd", "torchvision"]))
    torch.set_num_threads(THREADS)
    reasons = {(r["path"], r["precision"]): r["skipped"] for r in result["rows"]}
    assert reasons.pop((deploy.OURS_PATH, "fp32")) is None  # the one row left
    for (path, prec), reason in reasons.items():
        if path in (deploy.COMPILED_PATH, deploy.WINOGRAD_PATH, deploy.WINOGRAD_COMPILED_PATH, deploy.TV_PATH):
            assert reason in ("not run (--deploy-skip compiled)", "not run (--deploy-skip winograd)",
                              "not run (--deploy-skip torchvision)")  # --deploy-skip comes first
        elif prec == "bf16":
            assert reason.startswith("bf16 rows skipped: this CPU has neither AVX-512 BF16 nor AMX")
        elif path == deploy.ORT_PATH:
            assert reason == 'TEST.BACKEND \'onnxruntime\' needs the onnxruntime package: pip install "fcos_core[export]"'
        else:
            assert reason == 'TEST.BACKEND \'openvino\' needs the openvino package: pip install "fcos_core[openvino]"'

    assert list(result["throughput_gflops"]) == ["fp32"] and result["versions"]["openvino"] == "not installed"
    assert result["summary"]["bf16"]["met"] is None and math.isnan(result["summary"]["bf16"]["ratio"])
    info = dict(size=[64, 96], runs=1, warmup=0, threads=THREADS, device_name="cpu x", device="cpu", cpu_count=2,
                cpu_isa="", torch="t", torchvision="tv", date="d", command="c", cpu_flags={f: False for f in ISA_FLAGS})
    text = markdown(info, deploy=result)
    assert "amx_bf16 absent" in text and "OpenVINO not installed" in text
    assert "- ONNX export, OpenVINO int8: TEST.BACKEND 'openvino' needs the openvino package" in text
    assert "| ONNX export, onnxruntime | fp32 | skipped |" in text
    assert deploy.skip_reason(deploy.ORT_PATH, "int8", "onnxruntime", ["int8"]) == "not run (--deploy-skip int8)"


def _times(seconds):
    assert len(seconds) == len(deploy.ROWS)
    return {(path, prec): [s] for (path, prec, _), s in zip(deploy.ROWS, seconds)}


def test_row_logic_with_compiled_rows_and_the_goals():
    # ours fp32 1.0, bf16 0.4; compiled 0.9 / 0.3; Winograd fp32 0.7, compiled 0.6; ort 0.8 / 0.5;
    # openvino 1.0 / 0.2 / 0.25; torchvision 1.2 / 0.6
    times = _times([1.0, 0.4, 0.9, 0.3, 0.7, 0.6, 0.8, 0.5, 1.0, 0.2, 0.25, 1.2, 0.6])
    flops = {deploy.OURS_PATH: 100e9, deploy.TV_PATH: 150e9}
    throughput = {"fp32": 200e9, "bf16": 1000e9, "int8": None}
    calib = {deploy.OURS_PATH: (10, 1000), deploy.TV_PATH: (11, 1000)}
    rows = deploy.make_rows(times, {}, {k: 100 for k in times}, flops, throughput, calib)
    by_key = {(r["path"], r["precision"]): r for r in rows}
    compiled = by_key[(deploy.COMPILED_PATH, "fp32")]
    assert compiled["vs_ours_fp32"] == pytest.approx(0.9) and compiled["vs_openvino"] == pytest.approx(0.9)
    assert compiled["conv_fraction"] == pytest.approx(100e9 / 0.9 / 200e9)
    assert by_key[(deploy.COMPILED_PATH, "bf16")]["vs_openvino"] == pytest.approx(1.5)
    assert by_key[(deploy.ORT_PATH, "int8")]["vs_openvino"] == pytest.approx(2.0)
    assert math.isnan(by_key[(deploy.ORT_PATH, "int8")]["conv_fraction"])  # no int8 throughput measured
    assert by_key[(deploy.TV_PATH, "bf16")]["conv_fraction"] == pytest.approx(150e9 / 0.6 / 1000e9)
    assert by_key[(deploy.WINOGRAD_PATH, "fp32")]["vs_openvino"] == pytest.approx(0.7)
    summary = deploy.deploy_summary(rows)
    assert summary["fp32"]["met"] is True and summary["fp32"]["goal"] == 1.0
    assert summary["fp32"]["path"] == deploy.WINOGRAD_COMPILED_PATH and summary["bf16"]["path"] == deploy.COMPILED_PATH
    assert summary["bf16"]["met"] is False and summary["bf16"]["ratio"] == pytest.approx(1.5)
    line = deploy.summary_line(summary)
    assert ("ours compiled + Winograd fp32 / OpenVINO fp32: 0.600 (per round 0.600, best rounds 0.600), goal at most "
            "1.0x: met") in line
    assert "ours compiled bf16 / OpenVINO bf16: 1.500 (per round 1.500, best rounds 1.500), goal at most 1.2x: not met" in line
    # two rounds: best rounds compares the fastest round of each row (compiled + Winograd 0.5 / OpenVINO 0.6)
    times[(deploy.WINOGRAD_COMPILED_PATH, "fp32")], times[(deploy.OV_PATH, "fp32")] = [1.0, 0.5], [0.8, 0.6]
    two = deploy.deploy_summary(deploy.make_rows(times, {}, {k: 100 for k in times}, flops, throughput, calib))
    assert two["fp32"]["best_round"] == pytest.approx(0.5 / 0.6) and two["fp32"]["ratio"] == pytest.approx(0.75 / 0.7)


def test_conv_flops_against_a_hand_computation():
    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Conv2d(8, 4, 1, stride=2), torch.nn.Conv2d(4, 4, 3, padding=1, groups=2))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), inner, torch.nn.Linear(6, 5))
    x = torch.randn(1, 3, 10, 12)
    # conv 1: 8 x 10 x 12 outputs x 3 x 3 x 3 MACs; conv 2 (stride 2): 4 x 5 x 6 x 8; conv 3 (groups 2): 4 x 5 x 6 x 2 x 3 x 3
    macs = 8 * 10 * 12 * 27 + 4 * 5 * 6 * 8 + 4 * 5 * 6 * 18
    assert ct.model_conv_flops(lambda: model(x)) == 2 * macs
    assert ct.model_conv_flops(lambda: (model(x), model(x))) == 4 * macs  # each call counts
    weight = torch.randn(5, 3, 1, 1)  # a functional convolution counts too: 5 x 10 x 12 outputs x 3 MACs
    assert ct.model_conv_flops(lambda: torch.nn.functional.conv2d(x, weight)) == 2 * 5 * 10 * 12 * 3
    assert ct.conv_flops(256, 256, 3, 1, 100, 168) == 2 * 256 * 256 * 9 * 100 * 168


def test_cpu_conv_throughput_per_dtype_and_a_blank_int8(monkeypatch):
    small = ("small", 16, 16, 3, 1, 20, 24)
    dtypes = ["fp32", "int8"] + (["bf16"] if fcos_env.cpu_has_fast_bf16() else [])
    for dtype in dtypes:
        assert ct.cpu_conv_throughput(dtype, runs=1, conv=small) > 0
    monkeypatch.setattr(ct, "INT8_ENGINE", "no_such_engine")
    calls, repeats, notes = deploy.reference_conv_calls(["fp32", "int8"], seconds=0.05)
    assert list(calls) == [(deploy.REFERENCE, "fp32")] and list(repeats) == ["fp32"] and repeats["fp32"] >= 1
    # throughput = n x the reference convolution's FLOPs / the median of its interleaved times
    out = deploy.conv_throughputs(["fp32", "int8"], {(deploy.REFERENCE, "fp32"): [2.0, 1.0, 4.0]}, {"fp32": 3})
    assert out["fp32"] == pytest.approx(3 * ct.conv_flops(*ct.CONVS[0][1:]) / 2.0) and out["int8"] is None
    assert notes == ["int8 convolution throughput not measured (RuntimeError: torch has no no_such_engine quantized "
                     "engine here (it has {})), its fraction left blank".format(", ".join(torch.backends.quantized.supported_engines))]


def test_int8_calibration_input():
    _, cfg = build_ours("cpu")
    img = make_image((32, 48), 0)
    arrays = list(deploy.calibration_images(img, cfg, 3))
    assert [a.shape for a in arrays] == [(1, 3, 32, 48)] * 3 and all(a.dtype == np.float32 for a in arrays)
    assert not np.allclose(arrays[0], arrays[2])  # brightness differs
    reader = ArrayCalibrationReader(arrays, "variants")
    got = [reader.get_next() for _ in range(4)]
    assert [g is None for g in got] == [False, False, False, True] and np.array_equal(got[1]["image"], arrays[1])
    assert reader.describe() == "3 images of variants"
    with pytest.raises(ValueError, match="calibration images nothing: none given"):
        ArrayCalibrationReader([], "nothing").get_next()
    with pytest.raises(ValueError, match=r"calibration images bad: expected float32 arrays \[1, 3, h, w\], got shape \[3, 4, 5\]"):
        ArrayCalibrationReader([np.zeros((3, 4, 5))], "bad").get_next()


def test_cpu_info_names_every_flag_present_or_absent():
    info = cpu_info()
    assert list(info["isa"]) == list(ISA_FLAGS)
    assert info["flags"] == ",".join(f for f, present in info["isa"].items() if present)
    assert set(deploy.HEADER_FLAGS) <= set(ISA_FLAGS)


@pytest.mark.parametrize("argv, message", [(["--device", "cuda"], "--only deploy runs on the CPU"),
                                           (["--int8-calib-images", "0"], "--int8-calib-images must be positive")])
def test_command_line_errors(argv, message):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--only", "deploy", *argv],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr


def test_a_failed_export_is_not_tried_again_for_the_next_rows(monkeypatch, tmp_path):
    from fcos_core.export import onnx as onnx_module

    calls = []

    def failing_export(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("op Foo cannot be exported")

    monkeypatch.setattr(onnx_module, "export_onnx", failing_export)
    exports = deploy._Exports(torch.nn.Identity(), None, None, str(tmp_path), 2)
    monkeypatch.setattr("fcos_core.export.postprocess.make_export_postprocessor", lambda cfg: None)
    for get in (exports.fp32, exports.fp32, exports.int8):  # the int8 file needs the fp32 one
        with pytest.raises(RuntimeError, match="op Foo cannot be exported"):
            get()
    assert len(calls) == 1
