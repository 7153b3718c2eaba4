"""Config and weights files bounded by what they cost: non-finite values refused in every float field,
duplicate keys and deep nesting refused, --set values bounded like files, configs that validate but
would need gigabytes refused with the cost, weights files that would unpack to gigabytes refused."""

from __future__ import annotations

import math
import zipfile

import pydantic
import pytest
import torch
from torch import nn
from torchvision import tv_tensors

import ssdkit
import ssdkit.build
import ssdkit.config.files
import ssdkit.data.pipeline
from ssdkit.config import RunConfig
from ssdkit.config.overrides import parse_override
from ssdkit.io.convert import load_pth
from ssdkit.io.weights import load_weights, save_weights
from ssdkit.registry import BACKBONES, ComponentConfig

TINY = {
    "num_classes": 4,
    "image_size": 64,
    "backbone": {"type": "tiny", "channels": [8, 16, 32, 48, 64], "levels": 3},
    "priors": {"type": "ssd", "aspect_ratios": [[2.0], [2.0], [2.0]], "s_min": 0.2, "s_max": 0.9},
}

# ---------------------------------------------------------------- non-finite values


def float_paths(data, prefix=()):
    """Paths of every float leaf of a config dump (lists included)."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from float_paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from float_paths(v, (*prefix, i))
    elif isinstance(data, float):
        yield prefix


def with_value(data, path, value):
    import copy

    data = copy.deepcopy(data)
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return data


def test_every_float_field_refuses_nan_and_inf():
    """All float fields of a full run config (model, data, augmentation, training, evaluation)."""
    model = ssdkit.presets.get("ssd300_vgg16").model_dump(mode="json")
    base = RunConfig.from_dict({"model": model, "data": {}, "train": {"max_steps": 10, "grad_clip": 5.0}})
    raw = base.model_dump(mode="json")
    paths = list(float_paths(raw))
    assert len(paths) > 40  # the sweep covers the config, not a corner of it
    accepted = []
    for path in paths:
        for bad in (math.nan, math.inf, -math.inf):
            try:
                RunConfig.from_dict(with_value(raw, path, bad))
            except (pydantic.ValidationError, ValueError):
                continue
            accepted.append((".".join(map(str, path)), bad))
    assert not accepted, accepted


@pytest.mark.parametrize("field", ["train.max_steps", "data.batch_size", "model.num_classes", "train.seed"])
def test_a_bool_is_no_whole_number_in_overrides(field):
    with pytest.raises(ValueError, match=rf"'{field}' takes a whole number, not True"):
        RunConfig.from_dict({"model": TINY, "data": {}, "train": {"max_steps": 10}}, [f"{field}=true"])


# ---------------------------------------------------------------- YAML / JSON


def test_an_override_value_is_bounded_like_a_file():
    value = "&a [x, x, x, x, x, x, x, x, x, x]"
    nested = (
        f"[{value}, "
        + ", ".join(f"&{c} [" + ", ".join([f"*{p}"] * 10) + "]" for p, c in zip("abcdef", "bcdefg", strict=True))
        + "]"
    )
    with pytest.raises(ValueError, match=r"override 'train\.milestones=.*': holds more than 200000 values"):
        parse_override(f"train.milestones={nested}")


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "dup.yaml",
            "num_classes: 3\nimage_size: 64\nnum_classes: 5\n",
            r"the key 'num_classes' is given twice .*line 3",
        ),
        ("dup.json", '{"num_classes": 3, "num_classes": 5}', r"the key 'num_classes' is given twice"),
        ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n", r"nested more than 100 levels deep"),
        ("deep.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", r"nested too deeply"),
        ("nested-dup.yaml", "backbone: {type: tiny, levels: 3, levels: 2}\n", r"the key 'levels' is given twice"),
    ],
)
def test_config_files_with_duplicate_keys_or_deep_nesting(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        ssdkit.SSDConfig.from_file(path)
    assert name in str(err.value)


def test_yaml_merge_keys_still_override(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "base: &b {type: tiny, channels: [8, 16, 32, 48, 64], levels: 3}\n"
        "num_classes: 4\nimage_size: 64\nbackbone: {<<: *b, levels: 3}\n"
        "priors: {type: ssd, aspect_ratios: [[2], [2], [2]]}\n"
    )
    data = ssdkit.config.files.read_config_file(path)
    assert data["backbone"]["levels"] == 3 and data["backbone"]["type"] == "tiny"


def test_a_huge_yaml_stops_while_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(ssdkit.config.files, "MAX_CONFIG_VALUES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("class_names: [" + ", ".join(f"c{i}" for i in range(5000)) + "]\n")
    with pytest.raises(ValueError, match=r"big\.yaml: holds more than 1000 values"):
        ssdkit.SSDConfig.from_file(path)


# ---------------------------------------------------------------- configs that cost too much to build


def test_a_head_too_large_to_build_is_refused_with_its_cost():
    with pytest.raises(
        ValueError, match=r"the head would hold about [\d,]+ parameters \([\d.]+ GiB.*MAX_HEAD_PARAMETERS"
    ):
        ssdkit.build_model({**TINY, "num_classes": 100_000})


def test_a_hundred_thousand_aspect_ratios_are_refused_with_their_cost():
    ratios = [1.0 + k / 1000 for k in range(100_000)]
    cfg = {**TINY, "priors": {**TINY["priors"], "aspect_ratios": [ratios, ratios, ratios]}}
    with pytest.raises(ValueError, match=r"MAX_HEAD_PARAMETERS"):
        ssdkit.build_model(cfg)


def test_a_huge_input_is_probed_without_memory_and_refused_by_its_outputs():
    cfg = {**TINY, "image_size": 8192, "num_classes": 200}
    with pytest.raises(ValueError, match=r"priors x 200 classes = [\d,]+ scores per picture .*MAX_OUTPUTS_PER_IMAGE"):
        ssdkit.build_model(cfg)


def test_limits_are_the_callers_to_raise(monkeypatch):
    monkeypatch.setattr(ssdkit.build, "MAX_HEAD_PARAMETERS", 10)
    with pytest.raises(ValueError, match="MAX_HEAD_PARAMETERS"):
        ssdkit.build_model(TINY)
    monkeypatch.setattr(ssdkit.build, "MAX_HEAD_PARAMETERS", 10**12)
    assert ssdkit.build_model(TINY).priors.shape[1] == 4


class NumpyBackboneConfig(ComponentConfig):
    type: str = "numpy_probe_test"

    def num_levels(self) -> int:
        return 1


class NumpyBackbone(nn.Module):
    """Reads its input's values on the host: cannot run on fake tensors; the probe falls back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=8, padding=1)
        self.out_channels = [8]

    def forward(self, x):
        assert float(x.abs().sum().item()) >= 0
        return [self.conv(x)]


def test_a_backbone_that_cannot_run_on_fake_tensors_is_probed_for_real():
    BACKBONES.register("numpy_probe_test", config=NumpyBackboneConfig)(NumpyBackbone)
    try:
        model = ssdkit.build_model(
            {
                **TINY,
                "backbone": {"type": "numpy_probe_test"},
                "priors": {"type": "ssd", "aspect_ratios": [[2.0]], "scales": [0.3, 0.6]},
            }
        )
    finally:
        BACKBONES.unregister("numpy_probe_test")
    assert model.feature_sizes == [(8, 8)]


def test_augmenting_a_large_photo_is_bounded(monkeypatch):
    """A picture is shrunk before augmentation so its zoom-out canvas stays within MAX_AUGMENT_PIXELS."""
    monkeypatch.setattr(ssdkit.data.pipeline, "MAX_AUGMENT_PIXELS", 5000)
    model = ssdkit.build_model(TINY)
    items = ssdkit.data.pipeline.ModelInputs([], model.preprocessor, train=True, expand_ratio=4.0)
    image = tv_tensors.Image(torch.zeros(3, 100, 200, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[20.0, 10.0, 180.0, 90.0]]), format="XYXY", canvas_size=(100, 200))
    small, target = items._bounded(image, {"boxes": boxes, "labels": torch.tensor([1])})
    h, w = small.shape[-2:]
    assert h * w * 16 <= 5000 and (h, w) == (12, 25)  # scale sqrt(5000 / 20000) / 4 = 0.125
    expected = torch.tensor([[20.0 * w / 200, 10.0 * h / 100, 180.0 * w / 200, 90.0 * h / 100]])
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), expected)
    # a picture within the bounds is untouched
    monkeypatch.setattr(ssdkit.data.pipeline, "MAX_AUGMENT_PIXELS", 10**9)
    same, _ = items._bounded(image, {"boxes": boxes, "labels": torch.tensor([1])})
    assert same is image


# ---------------------------------------------------------------- weights files


def zip_bomb(path, unpacked: int) -> None:
    """A zip archive laid out like torch's, whose one entry deflates `unpacked` zero bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with z.open("archive/data/0", "w") as f:
            chunk = bytes(1 << 20)
            for _ in range(unpacked >> 20):
                f.write(chunk)


def test_a_compressed_weights_file_that_would_unpack_to_gigabytes_is_refused(tmp_path):
    path = tmp_path / "bomb.pth"
    zip_bomb(path, 64 << 20)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(
        ValueError, match=r"bomb\.pth: its entries claim 67,108,870 bytes once unpacked.*twice its size"
    ):
        load_pth(path)
    with pytest.raises(ValueError, match="once unpacked"):
        load_weights(ssdkit.build_model(TINY), path)


def test_a_weights_file_larger_than_the_model_allows_is_refused(tmp_path):
    model = ssdkit.build_model(TINY)
    path = save_weights(model, tmp_path / "w.pth")
    with pytest.raises(
        ValueError, match=r"w\.pth: its entries claim [\d,]+ bytes once unpacked, more than the 1,000 .*for this model"
    ):
        load_pth(path, max_bytes=1000)
    load_weights(ssdkit.build_model(TINY), path)  # the real limit: 4x the model, plus 64 MB


@pytest.mark.parametrize(
    "content, message",
    [
        (b"<html><head><title>404 Not Found</title></head></html>", "an HTML or XML page"),
        (bytes(100), "only zero bytes"),
        (b"weights: none\n", "it is text"),
        (b"PK\x03\x04" + bytes(60), "a damaged zip archive"),
    ],
)
def test_files_that_are_no_weights_say_so(tmp_path, content, message):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        load_weights(ssdkit.build_model(TINY), path)
    assert "weights_only=False" not in str(err.value) and "model.pth" in str(err.value)


def test_legacy_pickle_that_is_not_torch_gives_no_advice_to_unpickle(tmp_path):
    path = tmp_path / "odd.pth"
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError) as err:
        load_pth(path)
    assert "weights_only=False" not in str(err.value) and "odd.pth" in str(err.value)
