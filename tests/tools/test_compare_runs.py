"""tools/compare_runs.py as a command: the table on stdout and in --output, exit 1 with a note per
missing evaluation."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compare_runs_command(tmp_path):
    for name, ap in (("base", 0.4), ("aug", 0.45)):
        for dataset, value in (("shapes_val", ap), ("shapes_val_variant", ap / 2)):
            folder = tmp_path / name / "inference" / dataset
            folder.mkdir(parents=True)
            (folder / "coco_results.json").write_text(json.dumps({"bbox": {"AP": value, "AP50": value}}))
    table = tmp_path / "table.md"
    cmd = [sys.executable, str(ROOT / "tools" / "compare_runs.py"), str(tmp_path / "base"), str(tmp_path / "aug"),
           "--metrics", "AP", "--output", str(table)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "| aug | 0.450 | 0.225 | 0.50 | n/a |" in done.stdout
    assert table.read_text().splitlines() == done.stdout.splitlines()
    done = subprocess.run(cmd[:2] + [str(tmp_path / "none")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1 and "none/inference/shapes_val/coco_results.json" in done.stderr
