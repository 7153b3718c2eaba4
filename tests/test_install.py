"""What a user installing ssdkit gets: a wheel holding the shipped configs and py.typed, and `ssdkit --version`."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ssdkit
from ssdkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"ssdkit {ssdkit.__version__} (torch ")


def test_wheel_holds_the_package_configs_and_py_typed(tmp_path):
    """Built offline from a copy of the sources (pip, setuptools from the environment; nothing downloaded)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ssdkit", src / "ssdkit", ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    run = subprocess.run([*cmd, "-w", str(tmp_path / "out"), str(src)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (wheel,) = (tmp_path / "out").glob("ssdkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    assert "ssdkit/py.typed" in names
    configs = {f"ssdkit/config/recipes/{p.name}" for p in (ROOT / "ssdkit/config/recipes").glob("*.yaml")}
    assert configs and configs <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ssdkit").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    assert not [n for n in names if n.startswith("tests/")]
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_string(zipfile.ZipFile(wheel).read(info).decode())
    assert meta["Version"] == ssdkit.__version__
    assert {"export", "notebooks"} <= set(meta.get_all("Provides-Extra"))
    entry = zipfile.ZipFile(wheel).read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "ssdkit = ssdkit.cli:main" in entry
