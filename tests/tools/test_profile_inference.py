"""tools/profile_inference.py on a small image: an op table in which convolutions dominate."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_profile_small_image(capsys):
    spec = importlib.util.spec_from_file_location("profile_inference", ROOT / "tools" / "profile_inference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--size", "128", "160", "--runs", "1", "--rows", "5", "--threads", "1"])
    assert 0.3 < out["conv_share"] <= 1.0 and out["median_s"] > 0
    assert len(out["ops"]) == 5
    text = capsys.readouterr().out
    assert "channels_last True" in text and "| op | self CPU ms |" in text
