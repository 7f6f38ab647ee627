"""tools/benchmark_data.py and fcos_core.benchmark.data / dataset_memory on a tiny generated json:
the registry runs rows and writes their tables; the dataset row measures both variants from /proc.
Not a timing test: nothing here asserts speed or memory figures."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fcos_core.benchmark import data as D
from fcos_core.benchmark.dataset_memory import child, smaps_rollup_mib
from fcos_core.data.datasets.synthetic_coco import make_coco_like

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_coco_like(str(tmp_path_factory.mktemp("bench") / "coco"), num_images=40, seed=2, broken=1)


def test_a_row_is_one_registered_function(monkeypatch):
    monkeypatch.setattr(D, "ROWS", type(D.ROWS)())
    monkeypatch.setattr(D, "ROW_MODULES", [])

    @D.register_row("demo", "a demonstration row")
    def demo(args):
        return [{"variant": "a", "seconds": 1.5}, {"variant": "b", "seconds": args.value}]

    results = D.run_rows(type("Args", (), {"value": 0.25})())
    text = D.markdown(D.machine_info(["--only", "demo"]), results)
    assert "| a | 1.500 |" in text and "| b | 0.250 |" in text and "a demonstration row" in text
    assert "CPU: " in text and "tools/benchmark_data.py --only demo" in text


def test_smaps_rollup_reads_this_process():
    m = smaps_rollup_mib()
    assert m["Rss"] > 0 and 0 < m["Pss"] <= m["Rss"] and 0 < m["Private_Dirty"] <= m["Rss"]


@pytest.mark.parametrize("impl", ["compact", "pycocotools"])
def test_dataset_child_measures_a_variant(tiny, impl):
    row = child(impl, tiny["ann_file"], tiny["root"], 2)
    assert row["images"] >= 39 and row["workers"] == 2 and row["build_s"] > 0
    for key in ("pss_mib", "private_dirty_mib", "peak_over_start_mib", "worker_growth_max_mib"):
        assert math.isfinite(row[key]), key
    assert row["worker_growth_max_mib"] >= row["worker_growth_mean_mib"]


def test_tool_writes_markdown_and_json(tiny, tmp_path):
    md, js = tmp_path / "out.md", tmp_path / "out.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark_data.py"), "--only", "dataset", "--ann-file",
                    tiny["ann_file"], "--workers", "0", "--variants", "compact", "--markdown", str(md), "--json", str(js)],
                   check=True, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = json.loads(js.read_text())
    assert result["info"]["cpu"] and [r["dataset"] for r in result["rows"]["dataset"]] == ["COCODataset (compact records)"]
    assert "worker_growth_max_mib" in md.read_text() and "CPU: " in md.read_text()
