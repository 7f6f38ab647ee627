"""The loss-curve picture reads both kinds of metrics.json records: training (losses, lr) and the
evaluations during training (SOLVER.TEST_PERIOD), which get a third panel."""
import json

import pytest

from fcos_core.utils.loss_curves import ap_series, plot_loss_curves, read_metrics


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _train_records(n):
    return [{"iteration": i, "loss": 1.0 / i, "loss_cls": 0.5 / i, "lr": 0.01, "latest": {"loss": 1.0 / i}}
            for i in range(1, n + 1)]


def _eval(iteration, ap, ap50=None, dataset="val"):
    return {"iteration": iteration, "eval": {dataset: {"AP": ap, "AP50": ap50, "APs": None}}}


def _png_width(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big")


def test_read_metrics_splits_training_and_evaluation_records(tmp_path):
    path = _write(tmp_path / "metrics.json", _train_records(3)[:2] + [_eval(2, 0.1, 0.3)] + _train_records(3)[2:])
    train, evals = read_metrics(path)
    assert [r["iteration"] for r in train] == [1, 2, 3] and all("lr" in r for r in train)
    assert evals == [_eval(2, 0.1, 0.3)]


def test_ap_series_per_dataset_leaves_out_missing_values():
    series = ap_series([_eval(2, 0.1, 0.3), _eval(4, 0.2, None), _eval(4, 0.5, 0.6, dataset="other")])
    assert series["val"]["AP"] == ([2, 4], [0.1, 0.2])
    assert series["val"]["AP50"] == ([2], [0.3])
    assert series["other"]["AP"] == ([4], [0.5])


def test_an_ap_panel_appears_only_with_evaluation_records(tmp_path):
    plain = plot_loss_curves(_write(tmp_path / "a.json", _train_records(4)), str(tmp_path / "a.png"))
    with_ap = plot_loss_curves(_write(tmp_path / "b.json", _train_records(4) + [_eval(2, 0.1, 0.3), _eval(4, 0.2, 0.4)]),
                               str(tmp_path / "b.png"))
    assert _png_width(plain) == 1100 and _png_width(with_ap) == 1600


def test_evaluation_records_alone_are_not_a_loss_curve(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        plot_loss_curves(_write(tmp_path / "m.json", [_eval(2, 0.1, 0.3)]), str(tmp_path / "x.png"))
