"""save_weights / load_weights: formats, metadata, atomic writes, clear errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from torch import nn

import ssdkit
from ssdkit.config.model import SSDConfig
from ssdkit.io.convert import load_pth
from ssdkit.io.weights import load_weights, read_state_dict, save_weights
from ssdkit.registry import BACKBONES, ComponentConfig

TINY = "tiny_weights_test"


class TinyConfig(ComponentConfig):
    type: str = TINY
    width: int = 8

    def num_levels(self) -> int:
        return 2


class Tiny(nn.Module):
    """Two feature maps at strides 4 and 8: a stand-in backbone that builds in milliseconds."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, width, 3, stride=4, padding=1)
        self.b = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(width)  # buffers (running stats, num_batches_tracked) travel too
        self.out_channels = [width, width]

    def forward(self, x):
        x1 = self.a(x)
        return [x1, self.bn(self.b(x1))]


@pytest.fixture(scope="module", autouse=True)
def tiny_backbone():
    BACKBONES.register(TINY, config=TinyConfig)(Tiny)
    yield
    BACKBONES.unregister(TINY)


def tiny_model(num_classes: int = 3, seed: int = 0, width: int = 8) -> ssdkit.SSD:
    torch.manual_seed(seed)
    cfg = SSDConfig(
        num_classes=num_classes,
        image_size=64,
        backbone={"type": TINY, "width": width},
        priors={"type": "ssd", "aspect_ratios": [[2], [2, 3]], "scales": [0.2, 0.5, 0.9]},
    )
    model = ssdkit.build_model(cfg)
    with torch.no_grad():
        model.backbone.bn.running_mean.normal_()
        model.backbone.bn.num_batches_tracked.fill_(7)
    return model


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pt"])
def test_round_trip_with_metadata(tmp_path, suffix):
    src, dst = tiny_model(seed=0), tiny_model(seed=1)
    path = save_weights(src, tmp_path / "sub" / f"model{suffix}", extra_meta={"epoch": "12"})
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    result = load_weights(dst, path)
    assert_same_state(src, dst)
    assert result.missing_keys == [] and result.unexpected_keys == []
    meta = result.metadata
    assert meta["ssdkit_version"] == ssdkit.__version__ and meta["epoch"] == "12"
    assert SSDConfig.model_validate(json.loads(meta["config"])) == src.config


def test_file_formats_are_plain(tmp_path):
    model = tiny_model()
    st = save_weights(model, tmp_path / "m.safetensors")
    with safe_open(str(st), framework="pt") as f:  # any safetensors reader sees the config as a string
        assert json.loads(f.metadata()["config"])["num_classes"] == 3
        assert set(f.keys()) == set(model.state_dict())
    pth = save_weights(model, tmp_path / "m.pth", extra_meta={"note": "x"})
    obj = torch.load(pth, map_location="cpu", weights_only=True)  # plain types only
    assert set(obj) == {"state_dict", "config", "ssdkit_version", "meta"}
    assert obj["meta"] == {"note": "x"} and isinstance(obj["config"], str)


def test_bare_state_dict_and_dataparallel_prefix(tmp_path):
    src, dst = tiny_model(seed=0), tiny_model(seed=1)
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "bare.pth")
    load_weights(dst, tmp_path / "bare.pth")
    assert_same_state(src, dst)


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path):
    path = save_weights(tiny_model(num_classes=3), tmp_path / "three.safetensors")
    other = tiny_model(num_classes=5)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(
        ValueError,
        match=r"three\.safetensors.*'head\.cls\.0\.weight'.*\(12, 8, 3, 3\).*\(20, 8, 3, 3\)"
        r".*num_classes=3; this one has 5",
    ):
        load_weights(other, path)
    for k, v in other.state_dict().items():  # nothing was half-loaded
        assert torch.equal(v, before[k]), k
    # Without a recorded config the hint comes from the file's head shapes.
    torch.save(tiny_model(num_classes=3).state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match=r"bare\.pth.*num_classes=3; this one has 5"):
        load_weights(other, tmp_path / "bare.pth")


def test_missing_and_unexpected_keys(tmp_path):
    src = tiny_model()
    state = src.state_dict()
    del state["head.loc.1.bias"]
    state["head.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    dst = tiny_model(seed=1)
    with pytest.raises(
        ValueError, match=r"odd\.pth.*1 missing keys: head\.loc\.1\.bias.*1 unexpected keys: head\.extra"
    ):
        load_weights(dst, tmp_path / "odd.pth")
    result = load_weights(dst, tmp_path / "odd.pth", strict=False)
    assert result.missing_keys == ["head.loc.1.bias"] and result.unexpected_keys == ["head.extra.weight"]
    assert torch.equal(dst.head.loc[1].weight, src.head.loc[1].weight)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    model = tiny_model()
    path = save_weights(model, tmp_path / "m.pth")
    old = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_weights(tiny_model(seed=3), path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth"]


def test_bad_arguments(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_weights(model, tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="str to str"):
        save_weights(model, tmp_path / "m.pth", extra_meta={"epoch": 3})
    with pytest.raises(ValueError, match="reserved"):
        save_weights(model, tmp_path / "m.pth", extra_meta={"config": "x"})
    with pytest.raises(ValueError, match="local file path"):
        load_weights(model, "https://example.com/ssd.safetensors")
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_weights(model, tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_weights(model, tmp_path / "junk.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pth")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_load_weights_refuses_code(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "hook": _RunsCode(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused"):
        load_weights(tiny_model(), tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused"):
        load_pth(tmp_path / "evil.pth")
    assert not marker.exists()
