"""Named pretrained weights through torchvision's machinery, without network: a fake torch.hub cache
(conftest.FakeTorchHome) holds random tensors under the file names torchvision expects, and
torchvision's own models built from the same files are the peers."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import unmatched_detections
from torchvision.models.detection import SSD300_VGG16_Weights

import ssdkit
from ssdkit.config.model import SSDConfig
from ssdkit.io import pretrained

COCO = SSD300_VGG16_Weights.COCO_V1.meta["categories"]  # 91 labels, torchvision's layout


def _pictures(*sizes):
    g = torch.Generator().manual_seed(7)
    return [torch.rand(3, h, w, generator=g) for h, w in sizes]


MAX_DETECTIONS = {"ssdlite320_mobilenet_v3": 300, "ssd300_vgg16_coco": 200}


def _same_detections(ours, theirs, preset):
    for i, (d, e) in enumerate(zip(ours, theirs, strict=True)):
        assert len(d["scores"]) == len(e["scores"]) > 0, f"picture {i}: {len(d['scores'])} vs {len(e['scores'])}"
        missing = unmatched_detections(d, e, score_tol=1e-5, box_tol=1e-3)
        # At the per-picture cap, float rounding may pick either of two detections tied in score.
        cut = float(e["scores"].min()) + 1e-5 if len(e["scores"]) == MAX_DETECTIONS[preset] else -1.0
        assert all(float(e["scores"][j]) <= cut for j in missing), f"picture {i}: torchvision detections {missing[:10]}"
        assert len(missing) <= 2
        # label k is COCO category k: the names are torchvision's for the same labels
        assert d["names"] == [COCO[k] for k in d["labels"].tolist()]


@pytest.mark.parametrize(
    "preset, builder",
    [
        ("ssdlite320_mobilenet_v3", torchvision.models.detection.ssdlite320_mobilenet_v3_large),
        ("ssd300_vgg16_coco", torchvision.models.detection.ssd300_vgg16),
    ],
    ids=["ssdlite320", "ssd300"],
)
def test_coco_weights_detect_as_torchvision(torch_home, preset, builder):
    name = {"ssdlite320_mobilenet_v3": "ssdlite320_mobilenet_v3_coco"}.get(preset, preset)
    path = torch_home.add(name)
    ours = ssdkit.create_model(preset, weights="coco").eval()
    assert ours.weights_loaded
    peer = builder(weights=None, weights_backbone=None).eval()
    peer.load_state_dict(torch.load(path, weights_only=True))
    images = _pictures((240, 420))
    with torch.no_grad():
        theirs = peer(images)
    _same_detections(ours.predict(images), theirs, preset)


def test_coco_presets_carry_coco_names():
    assert ssdkit.presets.get("ssdlite320_mobilenet_v3").class_names == COCO[1:]
    assert ssdkit.presets.get("ssd300_vgg16_coco").class_names[0] == "person"
    names80 = ssdkit.presets.get("ssd300_resnet50").class_names
    assert len(names80) == 80 and "N/A" not in names80 and names80[-1] == "toothbrush"


def test_preset_weights_listing():
    (entry,) = ssdkit.presets.weights("ssdlite320_mobilenet_v3")
    assert entry["name"] == "ssdlite320_mobilenet_v3_coco" and entry["alias"] == "coco"
    assert entry["url"].startswith("https://download.pytorch.org/models/ssdlite320")
    assert entry["accuracy"] == {"COCO-val2017": {"box_map": 21.3}}  # torchvision's published box AP
    assert "license" in entry["licence"] and entry["recipe"].startswith("https://")
    assert ssdkit.presets.weights("ssd300_vgg16") == []


def test_backbone_imagenet_weights_land_in_the_right_tensors(torch_home):
    vgg_file, mnv3_file, resnet_file = (
        torch_home.add(n) for n in ("vgg16_imagenet", "mobilenet_v3_large_imagenet", "resnet50_imagenet")
    )
    x = torch.randn(1, 3, 96, 96)
    # VGG16, from YAML exactly as a run config writes it; torchvision's SSD300 also takes only the convs
    cfg = SSDConfig.model_validate(
        {**ssdkit.presets.get("ssd300_vgg16_coco").model_dump(), "backbone": {"type": "vgg16", "weights": "imagenet"}}
    )
    ours = ssdkit.build_model(cfg).backbone.eval()
    from torchvision.models.vgg import cfgs, make_layers

    peer = make_layers(cfgs["D"]).eval()  # torchvision's vgg16().features (its classifier holds no values)
    file_state = torch.load(vgg_file, weights_only=True)
    peer.load_state_dict({k[len("features.") :]: v for k, v in file_state.items() if k.startswith("features.")})
    with torch.no_grad():
        torch.testing.assert_close(ours.features(x), peer[:23](x))
        torch.testing.assert_close(ours.conv5(ours.features(x)), peer[:30](x))
    assert all(bool(p.isfinite().all()) for p in ours.fc.parameters())  # the file's classifier is not used

    mnv3 = ssdkit.build_model(
        ssdkit.presets.get("ssdlite320_mobilenet_v3", backbone={"weights": "imagenet", "reduced_tail": False})
    ).backbone.eval()
    peer = torchvision.models.mobilenet_v3_large().eval()
    peer.load_state_dict(torch.load(mnv3_file, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(mnv3(x)[1], peer.features(x))  # C5 = the classifier's last feature map

    res = ssdkit.build_model(ssdkit.presets.get("ssd300_resnet50", backbone={"weights": "imagenet"})).backbone
    file_state = torch.load(resnet_file, weights_only=True)
    ours_state = res.body.state_dict()
    assert [k for k in file_state if k.startswith(("conv1", "bn1", "layer1", "layer2", "layer3"))] == list(ours_state)
    for k, v in ours_state.items():
        assert torch.equal(v, file_state[k]), k


def test_missing_cache_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("SSDKIT_OFFLINE", "1")
    expected = tmp_path / "hub" / "checkpoints" / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
    with pytest.raises(pretrained.WeightsNotCachedError) as err:
        ssdkit.create_model("ssdlite320_mobilenet_v3", weights="coco")
    msg = str(err.value)
    assert "ssdlite320_mobilenet_v3_coco" in msg and "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1" in msg
    assert "https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth" in msg
    assert str(expected) in msg
    with pytest.raises(pretrained.WeightsNotCachedError, match="resnet50-0676ba61.pth"):
        ssdkit.build_model(ssdkit.presets.get("ssd300_resnet50", backbone={"weights": "imagenet"}))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "ssd300_vgg16", "weights": "coco"}, "no single 'coco' weights for the preset 'ssd300_vgg16'"),
        ({"name": "ssd300_vgg16_coco", "weights": "ssdlite320_mobilenet_v3_coco"}, "fit the detector"),
        ({"name": "ssd300_vgg16_coco", "weights": "https://example.com/w.pth"}, "URL"),
    ],
)
def test_wrong_names_are_clear(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssdkit.create_model(kwargs.pop("name"), **kwargs)


def test_finetune_to_four_classes(torch_home):
    path = torch_home.add("ssdlite320_mobilenet_v3_coco")
    with pytest.warns(UserWarning, match=r"12 classification-head tensors re-initialised.*head\.cls\.0\.3\.weight"):
        model = ssdkit.create_model("ssdlite320_mobilenet_v3", weights="coco", num_classes=4)
    from ssdkit.io.convert import from_torchvision

    file_state = from_torchvision(torch.load(path, weights_only=True))
    new = {k for k, v in model.state_dict().items() if v.shape != file_state[k].shape}
    assert new == {f"head.cls.{n}.3.{p}" for n in range(6) for p in ("weight", "bias")}
    for k, v in model.state_dict().items():
        if k not in new:
            assert torch.equal(v, file_state[k]), k
    assert model.class_names == ["1", "2", "3"]

    # a training step runs and changes the new head
    model.train()
    before = model.head.cls[0][3].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(2, 3, 320, 320)
    targets = [{"boxes": torch.tensor([[0.1, 0.1, 0.6, 0.7]]), "labels": torch.tensor([2])}] * 2
    losses = model.compute_loss(*model(x), targets)
    total = losses["loss"]
    assert torch.isfinite(total)
    total.backward()
    opt.step()
    assert not torch.equal(before, model.head.cls[0][3].weight)


def test_finetune_shape_mismatch_outside_the_head_names_the_tensor(torch_home):
    torch_home.add("ssdlite320_mobilenet_v3_coco")
    with pytest.raises(ValueError, match=r"tensor 'backbone\.body\.features\.\d+\..*' has shape"):
        ssdkit.create_model("ssdlite320_mobilenet_v3", weights="coco", backbone={"width_mult": 0.5})


def test_untrained_model_warns_once_when_predicting(two_level_backbone):
    cfg = {"num_classes": 3, "image_size": 64, "backbone": {"type": two_level_backbone}}
    cfg["priors"] = {"type": "ssd", "aspect_ratios": [[2], [2]], "scales": [0.2, 0.5, 0.9]}
    model = ssdkit.build_model(cfg).eval()
    picture = torch.rand(3, 64, 64)
    with pytest.warns(UserWarning, match="weights are random"):
        model.predict(picture)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(picture)  # once only
    fresh = ssdkit.build_model(cfg)
    fresh.load_state_dict(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.predict(picture)  # loaded weights: no warning


def test_weights_command_lists_and_fetches(torch_home, tmp_path, monkeypatch, capsys):
    from ssdkit.cli import main

    path = torch_home.add("ssdlite320_mobilenet_v3_coco")
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in pretrained.names()) and f"cached: {path}" in listing
    assert "box_map 25.1" in listing and "box_map 21.3" in listing
    assert main(["weights", "fetch", "ssdlite320_mobilenet_v3_coco", "--no-progress"]) == 0  # cached: read back
    assert str(path) in capsys.readouterr().out
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, offline
    assert main(["weights", "fetch", "resnet50_imagenet"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in err and "could not be downloaded" in err
    assert main(["weights", "fetch", "resnet51_imagenet"]) == 2
    assert "unknown names ['resnet51_imagenet']" in capsys.readouterr().err


def test_load_does_not_fetch_the_backbone_weights_it_replaces(torch_home, tmp_path, monkeypatch):
    torch_home.add("mobilenet_v3_large_imagenet")
    backbone = {"weights": "imagenet", "reduced_tail": False}
    model = ssdkit.create_model("ssdlite320_mobilenet_v3", num_classes=3, backbone=backbone)
    from ssdkit.io.weights import save_weights

    path = save_weights(model, tmp_path / "mine.safetensors")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # offline, nothing cached
    loaded = ssdkit.load(path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_predict_command_with_a_preset_and_its_named_weights(torch_home, tmp_path):
    import json

    from PIL import Image

    from ssdkit.cli import main

    torch_home.add("ssdlite320_mobilenet_v3_coco")
    Image.new("RGB", (200, 150), (120, 80, 40)).save(tmp_path / "a.jpg")
    args = ["predict", "ssdlite320_mobilenet_v3", "--weights", "coco", str(tmp_path / "a.jpg"), "--out", str(tmp_path)]
    assert main([*args, "--score-threshold", "0"]) == 0
    (entry,) = json.loads((tmp_path / "detections.json").read_text())["pictures"]
    expected = ssdkit.create_model("ssdlite320_mobilenet_v3", weights="coco").eval().predict(str(tmp_path / "a.jpg"))
    assert [d["name"] for d in entry["detections"]] == expected["names"]
    assert (tmp_path / "a.png").is_file()


def test_export_names_a_presets_named_weights_file_after_them(torch_home, tmp_path, monkeypatch):
    """`ssdkit export PRESET --weights coco` (or the full name) writes ssdlite320_mobilenet_v3_coco.*, once."""
    from ssdkit.cli import main

    torch_home.add("ssdlite320_mobilenet_v3_coco")
    monkeypatch.chdir(tmp_path)
    for weights in ("coco", "ssdlite320_mobilenet_v3_coco"):
        assert main(["export", "ssdlite320_mobilenet_v3", "--weights", weights, "--format", "torchscript"]) == 0
        assert [p.name for p in tmp_path.iterdir()] == ["ssdlite320_mobilenet_v3_coco.torchscript.pt"]
        (tmp_path / "ssdlite320_mobilenet_v3_coco.torchscript.pt").unlink()
