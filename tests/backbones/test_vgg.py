"""The vgg16 backbone: feature maps of SSD300 / SSD512, presets end to end, VGG16 weight files."""

from __future__ import annotations

import pydantic
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

import ssdkit
from ssdkit.backbones.vgg import SSDVGG16, VGG16Config
from ssdkit.registry import BACKBONES

# The paper (Liu et al., Fig. 2 and the SSD512 model): feature sizes and channels per source layer.
SSD300_SIZES = [38, 19, 10, 5, 3, 1]
SSD512_SIZES = [64, 32, 16, 8, 4, 2, 1]
CHANNELS = [512, 1024, 512, 256, 256, 256, 256]


@pytest.mark.parametrize(("highres", "side", "sizes"), [(False, 300, SSD300_SIZES), (True, 512, SSD512_SIZES)])
def test_feature_sizes_and_channels(highres, side, sizes):
    with torch.device("meta"):  # shapes only: no memory, no compute
        backbone = SSDVGG16(VGG16Config(highres=highres))
        feats = backbone(torch.empty(2, 3, side, side))
    assert [tuple(f.shape[2:]) for f in feats] == [(s, s) for s in sizes]
    assert [f.shape[1] for f in feats] == backbone.out_channels == CHANNELS[: len(sizes)]
    assert VGG16Config(highres=highres).num_levels() == len(sizes)


def test_same_vgg_layout_as_torchvision_ssd300():
    """Module for module, the SSD300 variant is torchvision's (which the parity test runs)."""
    from torchvision.models.detection.ssd import SSDFeatureExtractorVGG

    with torch.device("meta"):
        ours = SSDVGG16()
        theirs = SSDFeatureExtractorVGG(torchvision.models.vgg16().features, highres=False)

    def layers(m: nn.Module) -> list[str]:
        return [repr(x) for x in m.modules() if isinstance(x, (nn.Conv2d, nn.MaxPool2d, nn.ReLU))]

    assert layers(ours) == layers(theirs)


@pytest.fixture(scope="module")
def ssd300():
    return ssdkit.build_model(ssdkit.presets.get("ssd300_vgg16")).eval()


def test_ssd300_preset_forward(ssd300):
    assert ssd300.feature_sizes == [(s, s) for s in SSD300_SIZES]
    torch.manual_seed(0)
    feats = []
    hook = ssd300.backbone.register_forward_hook(lambda module, args, out: feats.append(out))
    try:
        with torch.no_grad():
            loc, logits = ssd300(torch.randn(2, 3, 300, 300) * 50)
    finally:
        hook.remove()
    conv4_3 = feats[0][0]
    assert loc.shape == (2, 8732, 4) and logits.shape == (2, 8732, 21)
    assert torch.isfinite(loc).all() and torch.isfinite(logits).all()
    # conv4_3 is L2-normalised over channels, then scaled by 20 (the initial learnable scale).
    norms = conv4_3.norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.tensor(20.0), rtol=1e-4)


def test_ssd512_preset_forward():
    model = ssdkit.build_model(ssdkit.presets.get("ssd512_vgg16")).eval()
    assert model.feature_sizes == [(s, s) for s in SSD512_SIZES]
    assert model.priors.shape == (24564, 4)
    with torch.no_grad():
        loc, logits = model(torch.randn(1, 3, 512, 512))
    assert loc.shape == (1, 24564, 4) and logits.shape == (1, 24564, 21)


def test_levels_must_agree_with_priors():
    with pytest.raises(ValueError, match="levels"):
        ssdkit.presets.get("ssd512_vgg16", backbone={"highres": False})


# ------------------------------------------------------------------ weight files
@pytest.fixture(scope="module")
def torchvision_vgg16_file(tmp_path_factory):
    """A torchvision VGG16 *classifier* state dict (its real names and shapes) with random values."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    # float16 halves the 138M-parameter file; loading converts to the model's float32 exactly.
    state = {k: torch.empty(s, dtype=torch.float16).uniform_(-1, 1, generator=g) for k, s in shapes.items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg16_imagenet.safetensors"
    save_file(state, str(path))
    return path, state


def test_loads_torchvision_vgg16_classifier(torchvision_vgg16_file):
    path, src = torchvision_vgg16_file
    backbone = BACKBONES.build(VGG16Config(weights=str(path)))
    # Convolutions keep torchvision's `features` index up to conv4_3, then become conv5_K.
    assert torch.equal(backbone.features[0].weight, src["features.0.weight"].float())
    assert torch.equal(backbone.features[21].bias, src["features.21.bias"].float())
    assert torch.equal(backbone.conv5.conv5_1.weight, src["features.24.weight"].float())
    assert torch.equal(backbone.conv5.conv5_3.bias, src["features.28.bias"].float())
    # fc6: fc6.weight[o, c, i, j] = W6[4o, c*49 + 7*(3i) + 3j] (pool5 is 512x7x7, flattened C, H, W);
    # every 4th unit and every 3rd tap of the 7x7 window, as in the paper.
    w6, b6 = src["classifier.0.weight"].float(), src["classifier.0.bias"].float()
    fc6 = backbone.fc.fc6
    assert fc6.weight.shape == (1024, 512, 3, 3)
    o = torch.arange(1024)[:, None, None, None]
    c = torch.arange(512)[None, :, None, None]
    i = torch.arange(3)[None, None, :, None]
    j = torch.arange(3)[None, None, None, :]
    assert torch.equal(fc6.weight, w6[4 * o, c * 49 + 7 * (3 * i) + 3 * j])
    assert torch.equal(fc6.bias, b6[0::4])
    # fc7: every 4th output and every 4th input unit.
    w7, b7 = src["classifier.3.weight"].float(), src["classifier.3.bias"].float()
    fc7 = backbone.fc.fc7
    assert fc7.weight.shape == (1024, 1024, 1, 1)
    assert torch.equal(fc7.weight[:, :, 0, 0], w7[4 * torch.arange(1024)[:, None], 4 * torch.arange(1024)[None, :]])
    assert torch.equal(fc7.bias, b7[0::4])
    # Not in a classifier: the L2 scale keeps its initial 20.
    assert torch.equal(backbone.l2_scale.detach(), torch.full((512,), 20.0))


def test_weights_through_a_preset(torchvision_vgg16_file):
    path, src = torchvision_vgg16_file
    cfg = ssdkit.presets.get("ssd300_vgg16", backbone={"weights": str(path)})
    assert cfg.backbone.weights == str(path)
    backbone = BACKBONES.build(cfg.backbone)
    assert torch.equal(backbone.conv5.conv5_2.weight, src["features.26.weight"].float())


@pytest.mark.parametrize(
    "url",
    [
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "s3://bucket/vgg.pth",
        "  http://example.com/w.safetensors",
    ],
)
def test_url_rejected(url):
    with pytest.raises(pydantic.ValidationError, match="local file path"):
        VGG16Config(weights=url)
    with pytest.raises(ValueError, match="downloads only its named weights"):
        ssdkit.presets.get("ssd300_vgg16", backbone={"weights": url})
    with pytest.raises(ValueError, match="local file path"):
        SSDVGG16(VGG16Config(weights=url))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        SSDVGG16(VGG16Config(weights=str(tmp_path / "nope.pth")))


def test_wrong_files_name_file_and_key(tmp_path):
    with torch.device("meta"):
        own = SSDVGG16().state_dict()
    good = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in own.items() if not k.startswith("extras")}
    bad_shape = {**good, "fc.fc6.weight": torch.zeros(1024, 512, 1, 1)}
    path = tmp_path / "bad_shape.pth"
    torch.save(bad_shape, path)
    with pytest.raises(ValueError, match=r"bad_shape\.pth.*fc\.fc6\.weight.*\(1024, 512, 1, 1\).*\(1024, 512, 3, 3\)"):
        SSDVGG16(VGG16Config(weights=str(path)))
    foreign = {**good, "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}
    path = tmp_path / "resnet.pth"
    torch.save(foreign, path)
    with pytest.raises(ValueError, match=r"resnet\.pth.*layer1\.0\.conv1\.weight"):
        SSDVGG16(VGG16Config(weights=str(path)))
    partial = {k: v for k, v in good.items() if k != "conv5.conv5_3.bias"}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(ValueError, match=r"partial\.pth.*conv5\.conv5_3\.bias"):
        SSDVGG16(VGG16Config(weights=str(path)))


def test_own_layout_round_trip(tmp_path):
    src = SSDVGG16()
    path = tmp_path / "backbone.pth"
    torch.save(src.state_dict(), path)
    loaded = SSDVGG16(VGG16Config(weights=str(path)))
    for (k, a), b in zip(src.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
