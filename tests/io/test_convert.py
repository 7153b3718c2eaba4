"""Converting ssd.pytorch and torchvision SSD checkpoints, and refusing pickles that run code."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import ssd300_vgg16

import ssdkit
from ssdkit.io.convert import from_ssd_pytorch, from_torchvision, load_pth, num_classes_of, vgg16_to_backbone
from ssdkit.io.weights import load_weights

# ssd.pytorch's layer specs (ssd.py: base['300'], extras['300'], mbox['300'], and the layers vgg() appends).
BASE = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]
EXTRAS = [256, "S", 512, 128, "S", 256, 128, 256, 128, 256]
MBOX = [4, 6, 6, 6, 4, 4]


def ssd_pytorch_layers():
    """ssd.pytorch's `vgg` ModuleList and `extras` list as specs: ("conv", cout, cin, k, stride, pad, dilation),
    ("relu",) or ("pool", k, stride, pad, ceil_mode), following vgg() and add_extras() layer by layer."""
    vgg, cin = [], 3
    for v in BASE:
        if v in ("M", "C"):
            vgg.append(("pool", 2, 2, 0, v == "C"))
        else:
            vgg += [("conv", v, cin, 3, 1, 1, 1), ("relu",)]
            cin = v
    vgg += [
        ("pool", 3, 1, 1, False),
        ("conv", 1024, 512, 3, 1, 6, 6),
        ("relu",),
        ("conv", 1024, 1024, 1, 1, 0, 1),
        ("relu",),
    ]
    extras, cin, flag = [], 1024, False
    for k, v in enumerate(EXTRAS):
        if cin != "S":
            if v == "S":
                extras.append(("conv", EXTRAS[k + 1], cin, (1, 3)[flag], 2, 1, 1))
            else:
                extras.append(("conv", v, cin, (1, 3)[flag], 1, 0, 1))
            flag = not flag
        cin = v
    return vgg, extras


def ssd_pytorch_state_dict(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under ssd.pytorch's names and shapes (multibox(): sources vgg[21], vgg[-2], extras[1::2])."""
    g = torch.Generator().manual_seed(seed)
    vgg, extras = ssd_pytorch_layers()
    state = {}

    def conv(name, cout, cin, k):
        # He-scaled so that activations stay O(1) through 20 random layers.
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))
        state[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.1

    for i, layer in enumerate(vgg):
        if layer[0] == "conv":
            conv(f"vgg.{i}", *layer[1:4])
    state["L2Norm.weight"] = 20 + torch.randn(512, generator=g)
    for i, layer in enumerate(extras):
        conv(f"extras.{i}", *layer[1:4])
    sources = [vgg[21][1], vgg[-2][1]] + [layer[1] for layer in extras[1::2]]
    for k, (cin, a) in enumerate(zip(sources, MBOX, strict=True)):
        conv(f"loc.{k}", a * 4, cin, 3)
        conv(f"conf.{k}", a * num_classes, cin, 3)
    return state


def ssd_pytorch_forward(state, x, num_classes):
    """SSD.forward of ssd.pytorch (train phase outputs), functionally, on `state`."""
    vgg, extras = ssd_pytorch_layers()

    def run(layer, name, x):
        if layer[0] == "conv":
            _, _, _, _, stride, pad, dil = layer
            return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], stride, pad, dil)
        if layer[0] == "relu":
            return F.relu(x)
        _, k, s, p, ceil = layer
        return F.max_pool2d(x, k, s, p, ceil_mode=ceil)

    sources = []
    for k in range(23):
        x = run(vgg[k], f"vgg.{k}", x)
    norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10  # L2Norm
    sources.append(state["L2Norm.weight"].view(1, -1, 1, 1) * (x / norm))
    for k in range(23, len(vgg)):
        x = run(vgg[k], f"vgg.{k}", x)
    sources.append(x)
    for k, layer in enumerate(extras):
        x = F.relu(run(layer, f"extras.{k}", x))
        if k % 2 == 1:
            sources.append(x)
    loc, conf = [], []
    for k, s in enumerate(sources):
        loc.append(F.conv2d(s, state[f"loc.{k}.weight"], state[f"loc.{k}.bias"], padding=1).permute(0, 2, 3, 1))
        conf.append(F.conv2d(s, state[f"conf.{k}.weight"], state[f"conf.{k}.bias"], padding=1).permute(0, 2, 3, 1))
    b = x.shape[0]
    loc = torch.cat([o.reshape(b, -1) for o in loc], 1).view(b, -1, 4)
    conf = torch.cat([o.reshape(b, -1) for o in conf], 1).view(b, -1, num_classes)
    return loc, conf


@pytest.fixture(scope="module")
def ssd300():
    return ssdkit.build_model(ssdkit.presets.get("ssd300_vgg16")).eval()


@pytest.fixture(scope="module")
def ssdpt_state():
    return ssd_pytorch_state_dict(21)


def test_ssd_pytorch_loads_strict_and_lands_in_place(ssd300, ssdpt_state):
    src = ssdpt_state
    ssd300.load_state_dict(from_ssd_pytorch(src), strict=True)
    b, h = ssd300.backbone, ssd300.head
    pairs = {
        "vgg.0.weight": b.features[0].weight,
        "vgg.21.bias": b.features[21].bias,
        "vgg.24.weight": b.conv5.conv5_1.weight,
        "vgg.28.weight": b.conv5.conv5_3.weight,
        "vgg.31.weight": b.fc.fc6.weight,
        "vgg.33.bias": b.fc.fc7.bias,
        "L2Norm.weight": b.l2_scale,
        "extras.0.weight": b.extras[0].conv8_1.weight,
        "extras.3.weight": b.extras[1].conv9_2.weight,
        "extras.4.weight": b.extras[2].conv10_1.weight,
        "extras.6.weight": b.extras[3].conv11_1.weight,
        "extras.7.bias": b.extras[3].conv11_2.bias,
        "conf.0.weight": h.cls[0].weight,
        "loc.0.weight": h.loc[0].weight,
        "conf.4.weight": h.cls[4].weight,
        "conf.5.weight": h.cls[5].weight,
        "loc.5.bias": h.loc[5].bias,
    }
    for key, param in pairs.items():
        assert torch.equal(param.detach(), src[key]), key
    assert num_classes_of(from_ssd_pytorch(src)) == 21


def test_ssd_pytorch_outputs_match_its_forward(ssd300, ssdpt_state):
    """Same outputs as ssd.pytorch's SSD.forward on the same weights (layer order, strides, paddings)."""
    ssd300.load_state_dict(from_ssd_pytorch(ssdpt_state), strict=True)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 300, 300) * 50
    with torch.no_grad():
        loc, logits = ssd300(x)
        ref_loc, ref_conf = ssd_pytorch_forward(ssdpt_state, x, 21)
    assert loc.shape == ref_loc.shape == (1, 8732, 4)
    for ours, ref in ((loc, ref_loc), (logits, ref_conf)):
        assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_ssd_pytorch_dataparallel_file_through_load_weights(ssd300, ssdpt_state, tmp_path):
    path = tmp_path / "ssd300_mAP_77.43_v2.pth"
    torch.save({f"module.{k}": v for k, v in ssdpt_state.items()}, path)
    result = load_weights(ssd300, path)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(ssd300.head.cls[2].weight.detach(), ssdpt_state["conf.2.weight"])


def test_ssd_pytorch_key_problems_are_listed(ssdpt_state):
    with pytest.raises(ValueError, match=r"unknown keys \(1\): vgg\.99\.weight"):
        from_ssd_pytorch({**ssdpt_state, "vgg.99.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unknown keys \(1\): priors"):
        from_ssd_pytorch({**ssdpt_state, "priors": torch.zeros(1)})
    without = {k: v for k, v in ssdpt_state.items() if k not in ("extras.5.weight", "vgg.31.bias")}
    with pytest.raises(ValueError, match=r"missing keys \(2\).*fc6\.bias.*conv10_2\.weight"):
        from_ssd_pytorch(without)
    bad = dict(ssdpt_state, **{"conf.3.weight": torch.zeros(6 * 20, 256, 3, 3)})
    with pytest.raises(ValueError, match="disagree on the number of classes"):
        from_ssd_pytorch(bad)


def test_ssd_pytorch_reduced_fc_base_net(ssdpt_state):
    """vgg16_reducedfc.pth, the base network ssd.pytorch trains from: `vgg` without the prefix."""
    base = {k[len("vgg.") :]: v for k, v in ssdpt_state.items() if k.startswith("vgg.")}
    out = vgg16_to_backbone(base)
    assert torch.equal(out["fc.fc6.weight"], base["31.weight"]) and torch.equal(out["fc.fc7.bias"], base["33.bias"])
    assert torch.equal(out["conv5.conv5_2.weight"], base["26.weight"])
    assert torch.equal(out["features.19.weight"], base["19.weight"])


# ------------------------------------------------------------------ torchvision
@pytest.fixture(scope="module")
def tv_state():
    """torchvision ssd300_vgg16's names and shapes, 7 classes, random values."""
    with torch.device("meta"):
        shapes = {
            k: v.shape for k, v in ssd300_vgg16(weights=None, weights_backbone=None, num_classes=7).state_dict().items()
        }
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def test_torchvision_loads_strict_with_its_class_count(tv_state):
    converted = from_torchvision(tv_state)
    assert num_classes_of(converted) == 7
    model = ssdkit.build_model(ssdkit.presets.get("ssd300_vgg16_coco", num_classes=7))
    model.load_state_dict(converted, strict=True)
    b, h = model.backbone, model.head
    pairs = {
        "backbone.features.21.weight": b.features[21].weight,
        "backbone.scale_weight": b.l2_scale,
        "backbone.extra.0.1.weight": b.conv5.conv5_1.weight,
        "backbone.extra.0.5.bias": b.conv5.conv5_3.bias,
        "backbone.extra.0.7.1.weight": b.fc.fc6.weight,
        "backbone.extra.0.7.3.weight": b.fc.fc7.weight,
        "backbone.extra.1.0.weight": b.extras[0].conv8_1.weight,
        "backbone.extra.3.2.weight": b.extras[2].conv10_2.weight,
        "backbone.extra.4.0.bias": b.extras[3].conv11_1.bias,
        "head.classification_head.module_list.0.weight": h.cls[0].weight,
        "head.classification_head.module_list.5.bias": h.cls[5].bias,
        "head.regression_head.module_list.3.weight": h.loc[3].weight,
    }
    for key, param in pairs.items():
        assert torch.equal(param.detach(), tv_state[key]), key


def test_torchvision_key_problems(tv_state):
    with pytest.raises(ValueError, match=r"unknown keys \(1\): anchor_generator\.x"):
        from_torchvision({**tv_state, "anchor_generator.x": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"missing keys \(1\): backbone\.l2_scale"):
        from_torchvision({k: v for k, v in tv_state.items() if k != "backbone.scale_weight"})
    with pytest.raises(ValueError, match="SSD512"):
        from_torchvision({**tv_state, "backbone.extra.5.0.weight": torch.zeros(128, 256, 1, 1)})
    prefixed = from_torchvision({f"module.{k}": v for k, v in tv_state.items()})
    assert prefixed.keys() == from_torchvision(tv_state).keys()


# ------------------------------------------------------------------ untrusted pickles
class _RunsCode:
    """Unpickling this calls os.mkdir(marker): proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_load_pth_refuses_code_and_runs_none(tmp_path, writer):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    payload = {"conv.bias": [0.0, 1.0], "x": _RunsCode(str(marker))}
    if writer == "torch.save":
        torch.save({**payload, "conv.weight": torch.zeros(2, 2)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=int(writer[-1]))
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"evil\.pth: refused to load.*run code") as info:
        load_pth(path)
    if writer != "pickle protocol 5":  # protocol 5 is already refused at its first opcode, before any GLOBAL
        assert "mkdir" in str(info.value)
    assert not marker.exists()
    # The positive control: an ordinary unpickler does run it, so the test would notice.
    if writer.startswith("pickle"):
        with open(path, "rb") as f:
            pickle.load(f)  # noqa: S301 (deliberately unsafe, on our own file)
        assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_pth_plain_and_broken(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"a": torch.arange(3)}, path)
    assert torch.equal(load_pth(path)["a"], torch.arange(3))
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"\x80\x04 not really a pickle")
    with pytest.raises(ValueError, match="broken.pth"):
        load_pth(broken)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_pth(tmp_path / "absent.pth")
