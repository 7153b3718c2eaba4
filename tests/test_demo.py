"""`make demo` (the `ssdkit demo` command) runs end to end and writes its pictures."""

from __future__ import annotations

from PIL import Image

from ssdkit.cli import main


def test_demo_command_prints_the_prior_table_and_writes_pictures(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    # SSD300's published prior count, and the per-level counts it is made of (38^2*4, 19^2*6, ...)
    assert "total                             8732" in text
    for n in (5776, 2166, 600, 150, 36):
        assert f" {n}\n" in text
    assert "positives in all:" in text
    for name in ("matched_priors.png", "prediction.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
