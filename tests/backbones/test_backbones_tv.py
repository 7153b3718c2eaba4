"""Backbones cut from torchvision classifiers: shapes, a torchvision peer, local weights."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torchvision
from pydantic import ValidationError
from torch import nn
from torchvision.models.detection.image_list import ImageList

import ssdkit
from ssdkit.backbones.mobilenet import MobileNetV3Config, MobileNetV3SSDLite
from ssdkit.backbones.resnet import ResNet50Config, ResNet50SSD
from ssdkit.boxes import xyxy_to_cxcywh


def _sides(feats: list[torch.Tensor]) -> list[tuple[int, int]]:
    return [tuple(f.shape[-2:]) for f in feats]


def test_mobilenet_matches_torchvision_ssdlite_extractor():
    """Same weights in, same six maps out as torchvision's SSDLite MobileNetV3 feature extractor."""
    from torchvision.models.detection.ssdlite import _mobilenet_extractor

    torch.manual_seed(0)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    # full (not reduced) tail: the 960-channel C5 that torchvision uses with an ImageNet backbone
    peer = _mobilenet_extractor(torchvision.models.mobilenet_v3_large(norm_layer=norm), 6, norm).eval()
    ours = MobileNetV3SSDLite().eval()
    theirs_sd, ours_sd = peer.state_dict(), ours.state_dict()
    assert len(theirs_sd) == len(ours_sd)
    for (kt, vt), (ko, vo) in zip(theirs_sd.items(), ours_sd.items(), strict=True):
        assert vt.shape == vo.shape and kt.rsplit(".", 1)[-1] == ko.rsplit(".", 1)[-1], (kt, ko)
    ours.load_state_dict(dict(zip(ours_sd, theirs_sd.values(), strict=True)))

    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        ref = list(peer(x).values())
        out = ours(x)
    assert _sides(out) == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert ours.out_channels == [r.shape[1] for r in ref] == [672, 960, 512, 256, 256, 128]
    assert [o.shape[1] for o in out] == ours.out_channels
    for r, o in zip(ref, out, strict=True):
        torch.testing.assert_close(o, r)


def test_ssdlite_preset_priors_equal_torchvision_default_boxes():
    model = ssdkit.build_model(ssdkit.presets.get("ssdlite320_mobilenet_v3"))
    peer = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    x = torch.zeros(1, 3, 320, 320)
    with torch.no_grad():
        feats = list(peer.backbone(x).values())
    boxes = peer.anchor_generator(ImageList(x, [(320, 320)]), feats)[0]  # [P, 4] xyxy pixels
    expected = xyxy_to_cxcywh(boxes.double() / 320)
    assert model.priors.shape == expected.shape
    torch.testing.assert_close(model.priors.double(), expected, atol=1e-6, rtol=0)


def test_resnet50_feature_sizes_and_channels():
    # shapes only: meta tensors run every layer's shape logic without the ~12 GMAC of arithmetic
    with torch.device("meta"):
        net = ResNet50SSD().eval()
        out = net(torch.zeros(1, 3, 300, 300))
    assert _sides(out) == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    assert net.out_channels == [1024, 512, 512, 256, 256, 256] == [o.shape[1] for o in out]
    assert ResNet50Config().num_levels() == len(out)
    assert MobileNetV3Config().num_levels() == 6


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_mobilenet_loads_local_classification_weights(tmp_path, fmt):
    torch.manual_seed(1)
    state = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    path = tmp_path / f"mnv3.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    net = MobileNetV3SSDLite(MobileNetV3Config(weights=str(path)))
    loaded = net.state_dict()
    body = [k for k in loaded if k.startswith("body.")]
    assert len(body) > 200
    for k in body:
        torch.testing.assert_close(loaded[k], state[k[len("body.") :]], rtol=0, atol=0)


def test_resnet50_loads_local_classification_weights_via_config(tmp_path):
    torch.manual_seed(2)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "r50.pth"
    torch.save({"state_dict": state}, path)  # a wrapped training checkpoint works too
    cfg = ssdkit.presets.get("ssd300_resnet50", backbone={"weights": str(path)})
    net = ssdkit.registry.BACKBONES.build(cfg.backbone)
    for name in ("layer3.5.conv2.weight", "bn1.running_var", "layer1.0.downsample.0.weight"):
        torch.testing.assert_close(net.state_dict()[f"body.{name}"], state[name], rtol=0, atol=0)
    # the stride change survives loading
    assert net.body.get_submodule("layer3.0.conv2").stride == (1, 1)
    assert net.body.get_submodule("layer3.0.downsample.0").stride == (1, 1)


@pytest.mark.parametrize(
    "url", ["https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth", "s3://bucket/w.pth"]
)
def test_weights_url_is_refused(url):
    with pytest.raises(ValidationError, match="local file path"):
        MobileNetV3Config(weights=url)
    with pytest.raises(ValidationError, match="local file path"):
        ResNet50Config(weights=url)
    with pytest.raises(ValidationError, match="downloads only its named weights"):
        ssdkit.presets.get("ssdlite320_mobilenet_v3", backbone={"weights": url})
    with pytest.raises(ValueError, match="local file path"):
        MobileNetV3SSDLite(MobileNetV3Config(weights=url))  # also when built directly, before any file access


def test_weights_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        MobileNetV3SSDLite(MobileNetV3Config(weights=str(tmp_path / "missing.pth")))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="does not fit"):
        MobileNetV3SSDLite(MobileNetV3Config(weights=str(wrong)))


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_weights_are_never_unpickled_as_code(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": _Payload()}, bad)
    with pytest.raises(ValueError, match=r"bad\.pth: refused to load.*weights_only=True"):
        MobileNetV3SSDLite(MobileNetV3Config(weights=str(bad)))
