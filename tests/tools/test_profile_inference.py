"""tools/profile_inference.py on a small image, as a command: an op table in which convolutions dominate."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_profile_small_image():
    cmd = [sys.executable, str(ROOT / "tools" / "profile_inference.py"), "--size", "128", "160", "--runs", "1", "--rows", "5", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "ours fcos_R_50_FPN_1x.yaml, 128x160" in text and "channels_last True" in text
    share = float(re.search(r"convolutions ([0-9.]+)%", text).group(1))
    assert 30 < share <= 100
    assert float(re.search(r"forward: median ([0-9.]+) s", text).group(1)) > 0
    lines = text.splitlines()
    start = lines.index("| op | self CPU ms | share | calls |")
    assert lines[start + 1] == "|---|---:|---:|---:|"
    assert len([l for l in lines[start + 2:] if l.startswith("| ")]) == 5
