"""Safe loading: a pickle that would run code is refused everywhere ssdkit reads weights; weight
files record config and version; a misfit names the first mismatching tensor and both shapes."""

from __future__ import annotations

import ast
import json
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

import ssdkit
from ssdkit.cli import main as cli
from ssdkit.io.convert import load_pth
from ssdkit.io.weights import load_weights, read_state_dict, save_weights
from ssdkit.registry import BACKBONES, ComponentConfig

PACKAGE = Path(ssdkit.__file__).resolve().parent


class NetConfig(ComponentConfig):
    type: str = "safe_loading_test"
    width: int = 8

    def num_levels(self) -> int:
        return 2


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, width, 3, stride=8, padding=1)
        self.b = nn.Conv2d(width, 8, 3, stride=2, padding=1)
        self.out_channels = [width, 8]

    def forward(self, x):
        a = self.a(x)
        return [a, self.b(a)]


@pytest.fixture(scope="module", autouse=True)
def backbone():
    BACKBONES.register("safe_loading_test", config=NetConfig)(Net)
    yield
    BACKBONES.unregister("safe_loading_test")


def config(num_classes: int = 3, width: int = 8) -> ssdkit.SSDConfig:
    return ssdkit.SSDConfig(
        num_classes=num_classes,
        image_size=64,
        backbone={"type": "safe_loading_test", "width": width},
        priors={"type": "ssd", "aspect_ratios": [[2], [2]], "scales": [0.2, 0.5, 0.9]},
        loss=None,
    )


class RunsShell:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {shlex.quote(str(self.marker))}",))


@pytest.fixture
def evil(tmp_path):
    """(torch.save zip file, plain pickle file, marker path). The payload is real: a plain
    unpickling of either file writes the marker (checked, then removed)."""
    marker = tmp_path / "code_ran"
    state = ssdkit.build_model(config()).state_dict()
    torch.save({"state_dict": state, "extra": RunsShell(marker)}, tmp_path / "evil.pth")
    with open(tmp_path / "evil_plain.pt", "wb") as f:
        pickle.dump({"state_dict": {"w": 1}, "extra": RunsShell(marker)}, f, protocol=2)
    torch.load(tmp_path / "evil.pth", weights_only=False)  # what ssdkit must never do
    assert marker.read_text().strip() == "pwned"
    marker.unlink()
    with open(tmp_path / "evil_plain.pt", "rb") as f:
        pickle.load(f)
    assert marker.exists()
    marker.unlink()
    return tmp_path / "evil.pth", tmp_path / "evil_plain.pt", marker


REFUSED = r"refused to load: .* would import or run code.*weights_only=True"


def test_a_pickle_that_runs_code_is_refused(evil):
    zipped, plain, marker = evil
    model = ssdkit.build_model(config())
    for path in (zipped, plain):
        for load in (lambda p: load_weights(model, p), read_state_dict, load_pth):
            with pytest.raises(ValueError, match=path.name + ": " + REFUSED):
                load(path)
            assert not marker.exists()


def test_the_cli_refuses_it_too(evil, tmp_path, capsys):
    config().to_file(tmp_path / "m.yaml")
    args = ["export", str(tmp_path / "m.yaml"), "--weights", str(evil[0]), "--format", "torchscript"]
    assert cli(args) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not evil[2].exists()


def test_backbone_weights_are_loaded_safely_too(evil):
    # A backbone's `weights:` (ImageNet classifier weights) goes through the same reader.
    cfg = BACKBONES.validate_config({"type": "mobilenet_v3_large", "weights": str(evil[0])})
    with pytest.raises(ValueError, match=REFUSED):
        BACKBONES.build(cfg)
    assert not evil[2].exists()


def _unsafe_calls(tree: ast.AST) -> list[str]:
    """Calls that could unpickle or construct arbitrary objects from a file."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name = f"{owner}.{node.func.attr}"
        weights_only = any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if name == "torch.load" and not weights_only:
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif name in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "dill.load"):
            found.append(f"line {node.lineno}: {name}")
        elif name in ("np.load", "numpy.load") and any(k.arg == "allow_pickle" for k in node.keywords):
            found.append(f"line {node.lineno}: {name} with allow_pickle")
    return found


def test_no_unsafe_load_anywhere_in_ssdkit():
    """Every torch.load in the package passes weights_only=True; no pickle/yaml.load at all."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        problems += [f"{path.relative_to(PACKAGE)} {p}" for p in _unsafe_calls(ast.parse(path.read_text()))]
    assert problems == []
    # The scan itself finds what it looks for.
    assert len(_unsafe_calls(ast.parse("torch.load(p)\ntorch.load(p, weights_only=False)\nyaml.load(s)"))) == 3


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weight_files_record_config_and_version(tmp_path, suffix):
    model = ssdkit.build_model(config(num_classes=5))
    _, meta = read_state_dict(save_weights(model, tmp_path / f"m{suffix}"))
    assert meta["ssdkit_version"] == ssdkit.__version__
    assert ssdkit.SSDConfig.model_validate(json.loads(meta["config"])) == model.config
    # ... and `load_weights` hands them back.
    assert load_weights(ssdkit.build_model(config(num_classes=5)), tmp_path / f"m{suffix}").metadata == meta


def test_a_misfit_names_the_first_mismatching_tensor_and_both_shapes(tmp_path):
    path = save_weights(ssdkit.build_model(config(num_classes=3, width=8)), tmp_path / "w8.safetensors")
    other = ssdkit.build_model(config(num_classes=5, width=16))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    # backbone.a.weight is first in the network; the head's tensors mismatch too, later.
    with pytest.raises(ValueError, match=r"w8\.safetensors: tensor 'backbone\.a\.weight' has shape \(8, 3, 3, 3\) "):
        load_weights(other, path)
    with pytest.raises(ValueError, match=r"\(8, 3, 3, 3\) in the file but \(16, 3, 3, 3\) in the model"):
        load_weights(other, path)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())  # nothing half-loaded
