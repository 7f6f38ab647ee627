"""fcos_core.utils.run_summary: metrics and training time read from run folders, the table."""
import json

import pytest

from fcos_core.utils.run_summary import format_table, read_metrics, read_training_time, summarize_runs


def make_run(root, name, aps, log_lines=()):
    """A fake OUTPUT_DIR: ``aps`` {dataset: AP} written as coco_results.json (AP50 = AP + 0.2)."""
    run = root / name
    for dataset, ap in aps.items():
        folder = run / "inference" / dataset
        folder.mkdir(parents=True)
        (folder / "coco_results.json").write_text(json.dumps({"bbox": {"AP": ap, "AP50": ap + 0.2}}))
    run.mkdir(exist_ok=True)
    if log_lines:
        (run / "log.txt").write_text("\n".join(log_lines) + "\n")
    return str(run)


def test_read_metrics_and_errors_name_the_file(tmp_path):
    run = make_run(tmp_path, "a", {"shapes_val": 0.5})
    assert read_metrics(run, "shapes_val") == {"AP": 0.5, "AP50": 0.7}
    with pytest.raises(FileNotFoundError, match="inference/shapes_val_variant/coco_results.json"):
        read_metrics(run, "shapes_val_variant")
    (tmp_path / "a" / "inference" / "shapes_val" / "coco_results.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid json"):
        read_metrics(run, "shapes_val")
    (tmp_path / "a" / "inference" / "shapes_val" / "coco_results.json").write_text('{"segm": {}}')
    with pytest.raises(ValueError, match="no 'bbox' results"):
        read_metrics(run, "shapes_val")


def test_training_time_is_the_last_one_logged(tmp_path):
    run = make_run(tmp_path, "a", {}, ["x INFO: Total training time: 0:05:00 (0.500 s / it)",
                                       "y INFO: Total training time: 0:09:58 (0.3516 s / it)"])
    assert read_training_time(run) == ("0:09:58", 0.3516)
    assert read_training_time(make_run(tmp_path, "b", {})) is None


def test_table_with_ratio_and_missing_runs(tmp_path):
    done = make_run(tmp_path, "aug_all", {"shapes_val": 0.4, "shapes_val_variant": 0.3},
                    ["Total training time: 0:10:00 (0.35 s / it)"])
    partial = make_run(tmp_path, "aug_running", {"shapes_val": 0.5})
    rows = summarize_runs([done, partial], ["shapes_val", "shapes_val_variant"])
    assert rows[0]["values"][("shapes_val_variant", "AP")] == 0.3 and rows[0]["missing"] == []
    assert rows[1]["values"][("shapes_val_variant", "AP")] is None
    assert "shapes_val_variant/coco_results.json" in rows[1]["missing"][0]
    lines = format_table(rows, ["shapes_val", "shapes_val_variant"])
    assert lines[0].count("|") == 8 and lines[1].startswith("|---")
    assert lines[2] == "| aug_all | 0.400 | 0.600 | 0.300 | 0.500 | 0.75 | 0:10:00 (0.350 s/it) |"
    assert lines[3] == "| aug_running | 0.500 | 0.700 | n/a | n/a | n/a | n/a |"
