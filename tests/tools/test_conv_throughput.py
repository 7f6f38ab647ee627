"""tools/conv_throughput.py as a command: a row per convolution with positive times for both dtypes."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONVS = ("head tower 3x3 256->256 on P3", "res3 3x3 128->128", "res2 1x1 256->64")


def test_rows_and_table():
    cmd = [sys.executable, str(ROOT / "tools" / "conv_throughput.py"), "--runs", "1", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "| convolution | fp32 ms | fp32 GFLOP/s | bf16 ms | bf16 GFLOP/s | bf16 / fp32 time |" in lines
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ") and not line.startswith("| convolution")]
    assert [r[0] for r in rows] == list(CONVS)
    for _, t32, g32, t16, g16, ratio in rows:
        assert float(t32) > 0 and float(t16) > 0 and float(g32) > 0 and float(g16) > 0
        assert float(ratio) > 0
