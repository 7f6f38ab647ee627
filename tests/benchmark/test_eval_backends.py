"""The evaluation-backend benchmark on a small problem: the seeded problem has the promised shape,
both backends are timed in one process and agree, the markdown names the CPU and the command."""
import argparse

import faster_coco_eval  # noqa: F401  (in the dev extra: these tests fail, never skip, without it)
import pytest

from fcos_core.benchmark.data import load_rows
from fcos_core.benchmark.eval_backends import coco_eval_rows, eval_markdown, main, make_problem


def test_the_problem_is_seeded_and_has_exactly_k_detections_per_image():
    gt, dets = make_problem(num_images=40, dets_per_image=25, seed=3)
    assert len(gt["images"]) == 40 and len(dets) == 40 * 25
    assert (gt, dets) == make_problem(num_images=40, dets_per_image=25, seed=3)
    assert make_problem(num_images=40, dets_per_image=25, seed=4)[1] != dets
    areas = [a["area"] for a in gt["annotations"]]
    assert min(areas) < 32 ** 2 and max(areas) > 96 ** 2 and any(32 ** 2 < a < 96 ** 2 for a in areas)
    assert {d["image_id"] for d in dets} == {i["id"] for i in gt["images"]}
    for d in dets:
        img = gt["images"][d["image_id"] - 1]
        assert 0 < d["score"] < 1 and 1 <= d["category_id"] <= 80 and d["bbox"][2] > 0 and d["bbox"][3] > 0
        assert d["bbox"][0] + d["bbox"][2] < img["width"] + 50


def test_main_times_both_backends_and_writes_json(tmp_path, capsys):
    out = tmp_path / "eval.json"
    result = main(["--images", "30", "--detections", "20", "--rounds", "1", "--json", str(out)])
    assert list(result["backends"]) == ["pycocotools", "faster_coco_eval"]
    for r in result["backends"].values():
        assert len(r["seconds"]) == 1 and r["median_s"] > 0 and len(r["stats"]) == 12 and r["stats"][0] > 0
    assert result["max_abs_stats_difference"] < 1e-12
    expected = result["backends"]["faster_coco_eval"]["median_s"] / result["backends"]["pycocotools"]["median_s"]
    assert result["ratio_faster_over_pycocotools"] == pytest.approx(expected)
    assert out.exists() and '"ratio_faster_over_pycocotools"' in out.read_text()
    text = capsys.readouterr().out
    assert "CPU: " in text and "--images 30 --detections 20" in text and "| pycocotools |" in text
    assert "\n".join(eval_markdown(result)) in text


def test_the_benchmark_data_row_gives_one_line_per_backend():
    title, fn, add_arguments = load_rows()["coco_eval"]
    assert fn is coco_eval_rows and "faster-coco-eval" in title
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--eval-images", "20", "--eval-detections", "10", "--eval-rounds", "1"])
    rows = coco_eval_rows(args)
    assert [r["backend"] for r in rows] == ["pycocotools", "faster_coco_eval"]
    assert all(list(r) == list(rows[0]) for r in rows)  # same columns
    ref, fast = rows
    assert ref["images"] == fast["images"] == 20 and ref["detections"] == 200
    assert ref["ratio_to_pycocotools"] == 1.0 and fast["ratio_to_pycocotools"] == fast["median_s"] / ref["median_s"]
    assert fast["max_abs_stats_difference"] < 1e-12 and fast["AP"] == pytest.approx(ref["AP"], abs=1e-12)
    assert fast["goal"].startswith("<= 0.15: ")
