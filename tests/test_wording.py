"""Counts in messages: "1 step", "2 steps"; the plain log lines a run prints without its bar."""

from __future__ import annotations

from ssdkit.engine.runlog import ProgressBar
from ssdkit.text import count


def test_count_uses_the_singular_for_one():
    assert count(1, "step") == "1 step"
    assert [count(n, "step") for n in (0, 2, 11)] == ["0 steps", "2 steps", "11 steps"]
    assert count(1, "batch", "batches") == "1 batch" and count(3, "batch", "batches") == "3 batches"


def test_plain_lines_without_the_bar(capsys):
    bar = ProgressBar(120, 100, bar=False)  # resumed at step 100
    bar.update(20)
    bar.show({"loss": 1.23456, "lr": 0.0001})
    assert capsys.readouterr().err == "step 120/120  loss 1.235  lr 0.0001\n"
    quiet = ProgressBar(10, 0, bar=False, messages=False)  # ranks other than 0 print nothing
    quiet.update()
    quiet.show({"loss": 1.0})
    assert capsys.readouterr().err == ""
