"""Plugin discovery through the `ssdkit.plugins` entry-point group, with real installed distributions.

The checks run in a fresh interpreter (discovery happens once per process), with the
distributions' folder on its PYTHONPATH; nothing about discovery is patched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

PLUGIN_MODULE = '''
"""A third-party package: a tiny backbone and a grid prior generator."""
import torch
from torch import nn
from pydantic import Field

from ssdkit.registry import BACKBONES, PRIORS, ComponentConfig


class PlugGridConfig(ComponentConfig):
    type: str = "plug_grid"
    sizes: list[float] = Field(..., description="one square prior per cell, per level")

    def num_levels(self):
        return len(self.sizes)


@PRIORS.register("plug_grid", config=PlugGridConfig)
class PlugGrid:
    def __init__(self, sizes):
        self.sizes = sizes

    @property
    def num_anchors(self):
        return [1] * len(self.sizes)

    def __call__(self, feature_sizes, image_size):
        out = []
        for (fh, fw), s in zip(feature_sizes, self.sizes):
            cy, cx = torch.meshgrid((torch.arange(fh) + 0.5) / fh, (torch.arange(fw) + 0.5) / fw, indexing="ij")
            out.append(torch.stack((cx.flatten(), cy.flatten(), torch.full((fh * fw,), s), torch.full((fh * fw,), s)), 1))
        return torch.cat(out)


class PlugTinyConfig(ComponentConfig):
    type: str = "plug_tiny"

    def num_levels(self):
        return 2


@BACKBONES.register("plug_tiny", config=PlugTinyConfig)
class PlugTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.b = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.out_channels = [4, 8]

    def forward(self, x):
        a = self.a(x)
        return [a, self.b(a)]
'''

CONFIG_YAML = """\
num_classes: 3
image_size: 64
backbone: {type: plug_tiny}
priors:
  type: plug_grid
  sizes: [0.25, 0.5]
"""

# Runs in the child, started with SSDKIT_DISABLE_PLUGINS=1: first what a user with discovery off
# sees, then (variable removed; discovery has never run in this process) what a user with it on sees.
CHILD = textwrap.dedent(
    """
    import json, os, sys, warnings

    def phase():
        report = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import ssdkit
            from ssdkit.registry import PRIORS
            report["priors"] = PRIORS.names()
            try:
                ssdkit.registry.BACKBONES.get("mini")  # a plugin's name, spelt like the built-in 'tiny'
            except KeyError as exc:
                report["unknown"] = str(exc)
            try:
                cfg = ssdkit.SSDConfig.from_file(sys.argv[1])
            except Exception as exc:
                report["error"] = f"{type(exc).__name__}: {exc}"
            else:
                import torch
                model = ssdkit.build_model(cfg).eval()
                with torch.no_grad():
                    loc, logits = model(torch.zeros(1, 3, 64, 64))
                report["config_class"] = type(cfg.priors).__module__ + "." + type(cfg.priors).__name__
                report["loc"] = list(loc.shape)
                report["num_priors"] = int(model.priors.shape[0])
        report["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        return report

    assert os.environ["SSDKIT_DISABLE_PLUGINS"] == "1"
    disabled = phase()
    del os.environ["SSDKIT_DISABLE_PLUGINS"]
    enabled = phase()
    print(json.dumps({"disabled": disabled, "enabled": enabled}))
    """
)


def _write_dist(root: Path, name: str, entry_points: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A folder holding two installed distributions: a working plugin and one that raises on import."""
    root = tmp_path_factory.mktemp("site")
    _write_dist(
        root,
        "myplug",
        "[ssdkit.plugins]\nmyplug = myplug.components\n",
        {"myplug/__init__.py": "", "myplug/components.py": PLUGIN_MODULE},
    )
    _write_dist(
        root,
        "brokenplug",
        "[ssdkit.plugins]\nbrokenplug = brokenplug\n",
        {"brokenplug/__init__.py": "raise RuntimeError('brokenplug cannot start: missing licence file')\n"},
    )
    (root / "plug.yaml").write_text(CONFIG_YAML)
    return root


@pytest.fixture(scope="module")
def child(site) -> dict:
    """The child's report: {"disabled": {...}, "enabled": {...}} (one interpreter: importing torch is the cost)."""
    env = {**os.environ, "SSDKIT_DISABLE_PLUGINS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(site / "plug.yaml")], env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_distributions_are_well_formed(site, monkeypatch):
    # What the child will see: both entry points, found by importlib.metadata on the path.
    monkeypatch.syspath_prepend(str(site))
    found = {ep.name: ep.value for ep in metadata.entry_points(group="ssdkit.plugins")}
    assert found.get("myplug") == "myplug.components"
    assert found.get("brokenplug") == "brokenplug"


def test_plugin_component_is_usable_from_yaml(child):
    r = child["enabled"]
    assert "error" not in r, r["error"]
    assert "plug_grid" in r["priors"] and "ssd" in r["priors"]
    assert r["config_class"] == "myplug.components.PlugGridConfig"
    # two levels: 64/4 = 16 and 8 cells a side, one prior per cell
    assert r["num_priors"] == 16 * 16 + 8 * 8
    assert r["loc"] == [1, r["num_priors"], 4]


def test_broken_plugin_warns_by_name_and_ssdkit_still_works(child):
    r = child["enabled"]
    broken = [w for w in r["warnings"] if "brokenplug" in w]
    assert len(broken) == 1, r["warnings"]
    assert broken[0].startswith("RuntimeWarning: ssdkit plugin 'brokenplug'")
    assert "missing licence file" in broken[0]  # the plugin's own reason
    # An unknown name says which plugin failed, instead of suggesting a look-alike built-in.
    assert "plugin 'brokenplug' (RuntimeError: brokenplug cannot start" in r["unknown"], r["unknown"]
    assert "did you mean" not in r["unknown"]
    assert not [w for w in r["warnings"] if "myplug" in w]


def test_disable_env_turns_discovery_off(child):
    r = child["disabled"]
    assert "plug_grid" not in r["priors"]
    assert "unknown prior generator 'plug_grid'" in r.get("error", ""), r
    assert "plugin discovery is off (SSDKIT_DISABLE_PLUGINS=1)" in r["error"]
    assert r["unknown"].startswith("unknown backbone 'mini'; plugin discovery is off")
    assert "did you mean" not in r["unknown"]
    assert not [w for w in r["warnings"] if "plugin" in w]
