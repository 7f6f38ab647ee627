"""tools/conv_throughput.py: prints a row per convolution with positive times for both dtypes."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("conv_throughput", ROOT / "tools" / "conv_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_and_table(monkeypatch, capsys):
    mod = _load()
    monkeypatch.setattr(mod, "CONVS", [("small 3x3", 8, 16, 3, 1, 12, 10), ("small 1x1 s2", 8, 4, 1, 2, 12, 10)])
    rows = mod.main(["--runs", "2", "--threads", "1"])
    assert [r[0] for r in rows] == ["small 3x3", "small 1x1 s2"]
    assert all(t32 > 0 and t16 > 0 for _, t32, t16 in rows)
    out = capsys.readouterr().out
    assert "| small 3x3 |" in out and "bf16 / fp32 time" in out
