"""tools/gpu_check.sh: valid bash, and a usage error for an unknown step (its real run needs a GPU)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def test_syntax_and_usage():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    proc = subprocess.run(["bash", str(SCRIPT), "nonsense"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: bash tools/gpu_check.sh [prepare|run]" in proc.stderr
