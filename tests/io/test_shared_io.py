"""The io helpers that several modules share: picture folders, PIL pixels by mode, the atomic writer,
and the "... and N more" lists of messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ssdkit.io.paths import atomic_write, remove_stale_temps
from ssdkit.io.picture_files import PICTURE_SUFFIXES, pictures_in, pil_pixels
from ssdkit.text import shortlist


def test_pictures_in_lists_picture_files_by_suffix_any_case_sorted(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.txt", "d.gif", "e.tiff", "notes.json"):
        (tmp_path / name).write_bytes(b"")
    got = [p.name for p in pictures_in(tmp_path)]
    assert got == ["a.jpg", "b.PNG", "d.gif", "e.tiff"]
    assert ".gif" in PICTURE_SUFFIXES and ".webp" in PICTURE_SUFFIXES


def test_pil_pixels_by_mode():
    grey16 = np.array([[0, 1000], [65535, 7]], dtype=np.uint16)
    got = pil_pixels(Image.fromarray(grey16))
    assert got.dtype == np.uint16 and np.array_equal(got, grey16)
    grey32 = Image.fromarray(np.array([[-5, 10], [300, 0]], dtype=np.int32), mode="I")
    got = pil_pixels(grey32)
    assert got.dtype == np.float32 and got.tolist() == [[0.0, 10.0], [300.0, 0.0]]
    rgb = pil_pixels(Image.new("L", (3, 2), 77))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8 and (rgb == 77).all()
    assert rgb.flags.writeable
    with pytest.raises(ValueError, match="no pixels"):
        pil_pixels(Image.new("RGB", (0, 4)))


def test_atomic_write_replaces_whole_and_cleans_up_after_a_failure(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_text() == "new"

    def broken(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_remove_stale_temps_removes_only_the_named_files_temps(tmp_path):
    for name in (".last.pt.abc123.tmp", ".best.pt.def456.tmp", ".other.pt.0.tmp", "last.pt"):
        (tmp_path / name).write_bytes(b"")
    assert remove_stale_temps(tmp_path, ["last.pt", "best.pt"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.0.tmp", "last.pt"]


def test_shortlist():
    assert shortlist(["a", "b", "c"], 2) == "a, b ... and 1 more"
    assert shortlist(["a", "b"], 2) == "a, b"
    assert shortlist(["x", "y", "z", "w"], 1, "; ") == "x ... and 3 more"
    assert shortlist([], 3) == ""
