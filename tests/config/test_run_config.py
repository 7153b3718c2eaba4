"""A run config writes each fact once: data sets take the model's image_size and class names, the model's
num_classes follows from its class_names; a contradicting explicit value is an error naming both fields."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from ssdkit import SSDConfig, presets
from ssdkit.config import DataConfig, RunConfig

MODEL = {
    "class_names": ["circle", "square", "triangle"],
    "image_size": 96,
    "backbone": {"type": "tiny", "levels": 3},
    "priors": {"type": "ssd", "aspect_ratios": [[2], [2], [2]], "s_min": 0.2, "s_max": 0.9},
}


def _run(data: dict, **model) -> RunConfig:
    return RunConfig.model_validate({"model": {**MODEL, **model}, "data": data, "train": {"epochs": 1}})


def test_data_sets_that_leave_image_size_out_take_the_models():
    run = _run({"train": {"type": "shapes", "num_images": 10}, "val": {"type": "shapes", "seed": 3}})
    assert run.data.train.image_size == (96, 96) and run.data.val.image_size == (96, 96)
    assert run.data.train.num_images == 10 and run.data.val.seed == 3
    run = _run({}, image_size=[64, 80])  # the default data sets too, with their own other defaults
    assert run.data.train.image_size == (64, 80) and run.data.val.image_size == (64, 80)
    assert run.data.val.seed == 1 and run.data.val.num_images == 200
    model = {k: v for k, v in MODEL.items() if k != "image_size"}  # the model's default size
    run = RunConfig.model_validate({"model": model, "data": {"train": {"type": "shapes"}}, "train": {"epochs": 1}})
    assert run.model.image_size == (300, 300) and run.data.train.image_size == (300, 300)


def test_data_config_alone_keeps_the_shapes_default():
    assert DataConfig().train.image_size == (160, 160)
    assert DataConfig(train={"type": "shapes"}).train.image_size == (160, 160)


def test_config_objects_inherit_too_and_are_not_changed():
    data = DataConfig(batch_size=4)
    run = RunConfig(model=SSDConfig(**MODEL), data=data, train={"epochs": 1})
    assert run.data.train.image_size == (96, 96) and run.data.batch_size == 4
    assert data.train.image_size == (160, 160)


def test_an_explicit_image_size_equal_to_the_models_is_accepted():
    run = _run({"train": {"type": "shapes", "image_size": 96}, "val": {"type": "shapes", "image_size": [96, 96]}})
    assert run.data.train.image_size == run.data.val.image_size == (96, 96)


def test_an_image_size_contradicting_the_models_is_an_error_naming_both():
    with pytest.raises(pydantic.ValidationError) as err:
        _run({"train": {"type": "shapes"}, "val": {"type": "shapes", "image_size": 128}})
    text = str(err.value)
    assert "data.val.image_size is 128 but model.image_size is [96, 96]" in text
    assert "leave data.val.image_size out (it follows model.image_size)" in text


def test_an_inherited_value_meets_the_data_sets_own_checks():
    with pytest.raises(pydantic.ValidationError, match=r"each side of image_size must lie in \[16, 4096\]") as err:
        _run({"train": {"type": "shapes"}}, image_size=5000)
    assert any(e["loc"][:3] == ("data", "train", "image_size") for e in err.value.errors())


def test_voc_class_names_follow_the_models_unless_given(tmp_path):
    names = ["cat", "dog"]
    run = _run(
        {"train": {"type": "voc", "root": "a"}, "val": {"type": "voc", "root": "b", "class_names": ["x", "y"]}},
        class_names=names,
    )
    assert run.data.train.class_names == names and run.model.num_classes == 3
    assert run.data.val.class_names == ["x", "y"]  # left to check_classes, which names the label that differs
    run = _run({"train": {"type": "voc", "root": "a"}}, class_names=None, num_classes=21)
    assert len(run.data.train.class_names) == 20 and run.data.train.class_names[0] == "aeroplane"


def test_num_classes_follows_from_class_names():
    assert _run({}).model.num_classes == 4
    assert SSDConfig(**MODEL, num_classes=None).num_classes == 4
    assert presets.get("ssd300_vgg16", class_names=["a", "b"]).num_classes == 3
    with pytest.raises(pydantic.ValidationError, match="num_classes"):
        SSDConfig(**{**MODEL, "class_names": None})  # neither: nothing to count


def test_a_num_classes_contradicting_class_names_is_an_error_with_the_remedy():
    with pytest.raises(pydantic.ValidationError) as err:
        SSDConfig(**MODEL, num_classes=5)
    text = str(err.value)
    assert "class_names lists 3 names but num_classes=5" in text
    assert "leave num_classes out (it follows from class_names)" in text


def test_written_run_configs_hold_each_value_once_and_read_back(tmp_path):
    run = _run({"train": {"type": "shapes"}, "val": {"type": "voc", "root": "v"}})
    written = yaml.safe_load(run.to_file(tmp_path / "run.yaml").read_text())
    assert "image_size" not in written["data"]["train"] and "class_names" not in written["data"]["val"]
    assert RunConfig.from_file(tmp_path / "run.yaml") == run
    bigger = run.with_overrides(["model.image_size=128"])
    assert bigger.data.train.image_size == (128, 128)
