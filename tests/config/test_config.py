"""SSDConfig: file round trips, error paths, absurd values, the cross-field check, the JSON schema."""

from __future__ import annotations

import json

import pydantic
import pytest
import yaml
from pydantic import Field

import ssdkit
from ssdkit import SSDConfig, presets
from ssdkit.registry import ALL_REGISTRIES, BACKBONES, PRIORS, ComponentConfig

COMPONENTS = list(ALL_REGISTRIES)  # backbone, head, priors, matcher, box_coder, loss, postprocess


def _paths(err: pydantic.ValidationError) -> list[str]:
    """'dotted.path: message' per error, the way a user reads them."""
    return [".".join(map(str, e["loc"])) + ": " + e["msg"] for e in err.errors()]


def _invalid(data: dict) -> list[str]:
    with pytest.raises(pydantic.ValidationError) as err:
        SSDConfig.model_validate(data)
    return _paths(err.value)


@pytest.fixture
def base() -> dict:
    """A valid config as plain data (what a YAML file holds)."""
    return presets.get("ssd300_vgg16").model_dump(mode="json")


# ---------- files ----------


@pytest.mark.parametrize("name", presets.names())
@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_preset_round_trips_through_files(tmp_path, name, suffix):
    cfg = presets.get(name)
    path = cfg.to_file(tmp_path / f"cfg{suffix}")
    text = path.read_text()
    data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert data["priors"]["type"] == cfg.priors.type  # really that format, with the types written out
    back = SSDConfig.from_file(path)
    assert back.model_dump() == cfg.model_dump()
    assert back == cfg
    for role in COMPONENTS:
        assert type(getattr(back, role)) is type(getattr(cfg, role)), role
    assert type(back.priors) is PRIORS.config_class(cfg.priors.type)  # not a bare ComponentConfig


def test_component_fields_are_dumped_in_full(tmp_path):
    # SerializeAsAny: a component's own fields (not only ComponentConfig's `type`) reach the file
    data = yaml.safe_load(presets.get("ssd300_vgg16").to_file(tmp_path / "c.yaml").read_text())
    assert data["priors"]["aspect_ratios"][1] == [2.0, 3.0]
    assert data["matcher"]["iou_threshold"] == 0.5
    assert "variances" in data["box_coder"]


def test_from_file_reports_bad_files(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        SSDConfig.from_file(tmp_path / "list.yaml")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SSDConfig.from_file(tmp_path / "bad.json")
    (tmp_path / "evil.yaml").write_text("num_classes: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ValueError, match="not valid YAML"):  # safe loader: no Python objects from YAML
        SSDConfig.from_file(tmp_path / "evil.yaml")


def _file_error(tmp_path, text: str) -> pydantic.ValidationError:
    path = tmp_path / "my_model.yaml"
    path.write_text(text)
    with pytest.raises(pydantic.ValidationError) as err:
        SSDConfig.from_file(path)
    assert str(err.value).startswith(f"{path}: ")  # the file first
    return err.value


TINY = "num_classes: 4\nimage_size: 64\npriors: {type: ssd, aspect_ratios: [[2], [2], [2]], s_min: 0.2, s_max: 0.9}\n"


def test_model_file_unknown_key_names_the_file_the_path_and_the_closest_key(tmp_path):
    err = _file_error(
        tmp_path, TINY + "backbone: {type: tiny, levels: 3, chanels: [8, 16, 32, 48, 64]}\npostproces: {}\n"
    )
    text = str(err)
    assert "unknown key 'backbone.chanels'; did you mean 'backbone.channels'?" in text
    assert "unknown key 'postproces'; did you mean 'postprocess'?" in text
    assert sorted(".".join(map(str, e["loc"])) for e in err.errors()) == ["backbone.chanels", "postproces"]


def test_model_file_bad_value_and_wrong_type_name_the_field_path(tmp_path):
    err = _file_error(
        tmp_path, TINY.replace("image_size: 64", "image_size: huge") + "backbone: {type: tiny, levels: 0}\n"
    )
    paths = _paths(err)
    assert any(p.startswith("image_size") for p in paths), paths
    assert any(p.startswith("backbone.levels") for p in paths), paths
    assert "did you mean" not in str(err)  # no unknown key, no suggestion
    err = _file_error(tmp_path, TINY + "backbone: [tiny]\n")
    assert "backbone" in str(err) and "must be a mapping with a 'type' key" in str(err)
    err = _file_error(tmp_path, TINY + "backbone: {type: tinny}\n")
    assert "unknown backbone 'tinny'; did you mean 'tiny'?" in str(err)


def test_run_and_model_files_report_errors_alike(tmp_path):
    from ssdkit.config import RunConfig

    run = tmp_path / "run.yaml"
    run.write_text(
        "model: {num_classes: 4, backbone: {type: tiny, levles: 3}, priors: {type: ssd, s_min: 0.2, s_max: 0.9}}\ntrain: {epochs: 1}\n"
    )
    with pytest.raises(pydantic.ValidationError) as err:
        RunConfig.from_file(run)
    assert str(err.value).startswith(f"{run}: ")
    assert "unknown key 'model.backbone.levles'; did you mean 'model.backbone.levels'?" in str(err.value)


# ---------- error paths ----------


@pytest.mark.parametrize(
    "edit, path",
    [
        (lambda d: d["priors"]["aspect_ratios"][2].__setitem__(1, -3.0), "priors.aspect_ratios.2.1: "),
        (lambda d: d["priors"].__setitem__("min_sizes", [30, 60, 111, 162, 213, -264]), "priors.min_sizes.5: "),
        (lambda d: d["priors"].__setitem__("steps", [8, 16, 32]), "priors.steps: "),
        (lambda d: d["matcher"].__setitem__("iou_threshold", 1.0), "matcher.iou_threshold: "),
        (lambda d: d["matcher"].__setitem__("iou_threshold", -0.5), "matcher.iou_threshold: "),
        (lambda d: d["box_coder"].__setitem__("variances", [0.1, 0.1, 0.2]), "box_coder.variances"),
        (lambda d: d["postprocess"].__setitem__("score_threshold", -0.1), "postprocess.score_threshold: "),
        (lambda d: d["postprocess"].__setitem__("iou_threshold", -0.5), "postprocess.iou_threshold: "),
        (lambda d: d["postprocess"].__setitem__("max_detections", 0), "postprocess.max_detections: "),
        (lambda d: d["head"].__setitem__("kernel_size", 0), "head.kernel_size: "),
        (lambda d: d["preprocess"].__setitem__("std", [0.2, 0.0, 0.2]), "preprocess.std: "),
        (lambda d: d["preprocess"].__setitem__("channel_order", "RGBA"), "preprocess.channel_order: "),
        (lambda d: d.__setitem__("image_size", 0), "image_size: "),
        (lambda d: d.__setitem__("image_size", 100_000), "image_size: "),
        (lambda d: d.__setitem__("image_size", [300, 0]), "image_size: "),
        (lambda d: d.__setitem__("num_classes", 10**6), "num_classes: "),
        (lambda d: d.__setitem__("num_classes", 1), "num_classes: "),
        (lambda d: d.__setitem__("num_classes", 2), "class_names lists 20 names but num_classes=2"),
        (lambda d: d.pop("priors"), "priors: Field required"),
    ],
)
def test_validation_errors_name_the_field(base, edit, path):
    edit(base)
    paths = _invalid(base)
    assert any(path in p for p in paths), paths


def test_several_errors_are_all_reported(base):
    base["matcher"]["iou_threshold"] = 2
    base["priors"]["aspect_ratios"][0] = [0]
    paths = _invalid(base)
    assert any(p.startswith("matcher.iou_threshold: ") for p in paths)
    assert any(p.startswith("priors.aspect_ratios.0.0: ") for p in paths)


def _registered_types() -> list[tuple[str, str]]:
    return [(role, name) for role, reg in ALL_REGISTRIES.items() for name in reg.names()]


@pytest.mark.parametrize("role, name", _registered_types())
def test_unknown_fields_rejected_in_every_component(base, role, name):
    base[role] = {"type": name, "no_such_field": 1}
    assert f"{role}.no_such_field: Extra inputs are not permitted" in _invalid(base)


def test_unknown_fields_rejected_at_top_level_and_in_preprocess(base):
    assert "num_clases: Extra inputs are not permitted" in _invalid({**base, "num_clases": 3})
    base["preprocess"]["means"] = [0, 0, 0]
    assert "preprocess.means: Extra inputs are not permitted" in _invalid(base)


@pytest.mark.parametrize(
    "role, typo, suggestion",
    [
        ("matcher", "sdd", "ssd"),
        ("priors", "ssdd", "ssd"),
        ("backbone", "vgg61", "vgg16"),
        ("postprocess", "hrad", "hard"),
    ],
)
def test_unknown_type_suggests_the_closest(base, role, typo, suggestion):
    base[role] = {"type": typo}
    (msg,) = [p for p in _invalid(base) if p.startswith(f"{role}: ")]
    assert f"unknown {ALL_REGISTRIES[role].role} '{typo}'; did you mean '{suggestion}'?" in msg
    for known in ALL_REGISTRIES[role].names():
        assert known in msg


def test_missing_type_lists_the_known_ones(base):
    base["matcher"] = {"iou_threshold": 0.4}
    (msg,) = [p for p in _invalid(base) if p.startswith("matcher: ")]
    assert "needs a 'type'" in msg and "ssd" in msg


def test_a_config_object_of_an_unregistered_type_is_a_validation_error(base):
    class Orphan(ComponentConfig):
        type: str = "orphan_matcher"

    base["matcher"] = Orphan()
    assert any("unknown matcher 'orphan_matcher'" in p for p in _invalid(base))


@pytest.mark.parametrize("bad", [["ssd"], 5, None])
def test_a_non_string_type_is_a_validation_error(base, bad):
    base["matcher"] = {"type": bad}
    assert any(p.startswith("matcher: ") and "must be a string" in p for p in _invalid(base))


def test_a_non_mapping_component_is_a_validation_error(base):
    base["matcher"] = "ssd"
    assert any(p.startswith("matcher: ") and "must be a mapping" in p for p in _invalid(base))


def test_assignment_is_validated():
    cfg = presets.get("ssd300_vgg16")
    with pytest.raises(pydantic.ValidationError):
        cfg.num_classes = 0
    with pytest.raises(pydantic.ValidationError):
        cfg.matcher.iou_threshold = 1.5
    cfg.matcher = {"type": "ssd", "iou_threshold": 0.4}
    assert type(cfg.matcher).__name__ == "SSDMatcherConfig" and cfg.matcher.iou_threshold == 0.4


# ---------- cross-field check, run-time registered components ----------


class _TinyBackboneConfig(ComponentConfig):
    type: str = "_test_tiny"
    levels: int = Field(2, ge=1)

    def num_levels(self) -> int:
        return self.levels


class _GridPriorsConfig(ComponentConfig):
    type: str = "_test_grid"
    sizes: list[float] = Field(..., description="one square prior per cell, per level")

    def num_levels(self) -> int:
        return len(self.sizes)


@pytest.fixture
def test_components():
    """A backbone with num_levels and a prior generator, registered for one test only."""
    BACKBONES.register("_test_tiny", config=_TinyBackboneConfig)(lambda levels: None)
    PRIORS.register("_test_grid", config=_GridPriorsConfig)(lambda sizes: None)
    yield
    BACKBONES.unregister("_test_tiny")
    PRIORS.unregister("_test_grid")


def _tiny(levels: int, prior_levels: int) -> dict:
    return {
        "num_classes": 3,
        "backbone": {"type": "_test_tiny", "levels": levels},
        "priors": {"type": "ssd", "aspect_ratios": [[2]] * prior_levels, "s_min": 0.2, "s_max": 0.9},
    }


@pytest.mark.usefixtures("test_components")
def test_prior_levels_must_match_backbone_levels():
    assert SSDConfig.model_validate(_tiny(3, 3)).priors.num_levels() == 3
    (msg,) = _invalid(_tiny(3, 4))
    assert "priors has 4 levels but backbone '_test_tiny' gives 3 feature maps" in msg
    # a run-time registered prior generator with num_levels is checked the same way
    bad = {**_tiny(2, 2), "priors": {"type": "_test_grid", "sizes": [0.1, 0.3, 0.6]}}
    assert "priors has 3 levels" in _invalid(bad)[0]


def test_preset_backbones_agree_with_their_priors():
    for name in presets.names():
        cfg = presets.get(name)
        assert cfg.backbone.num_levels() == cfg.priors.num_levels(), name


def test_schema_lists_every_registered_type():
    schema = SSDConfig.model_json_schema()
    defs = schema["$defs"]
    text = json.dumps(schema)
    for role, reg in ALL_REGISTRIES.items():
        for name in reg.names():
            assert f'"const": "{name}"' in text, (role, name)
    priors = [
        d
        for d in defs.values()
        if d.get("properties", {}).get("type", {}).get("const") == "ssd" and "aspect_ratios" in d["properties"]
    ]
    assert len(priors) == 1
    assert {"aspect_ratios", "min_sizes", "max_sizes", "scales", "s_min", "s_max", "steps", "offset", "clip"} <= set(
        priors[0]["properties"]
    )
    assert priors[0].get("additionalProperties") is False
    assert schema.get("additionalProperties") is False
    assert set(schema["required"]) >= {"num_classes", "backbone", "priors"}


@pytest.mark.usefixtures("test_components")
def test_run_time_registered_type_is_in_schema_and_loads_from_yaml(tmp_path):
    text = json.dumps(SSDConfig.model_json_schema())
    assert '"const": "_test_grid"' in text and '"const": "_test_tiny"' in text
    path = tmp_path / "grid.yaml"
    path.write_text(
        "num_classes: 4\nimage_size: 128\nbackbone: {type: _test_tiny, levels: 2}\n"
        "priors:\n  type: _test_grid\n  sizes: [0.2, 0.6]\n"
    )
    cfg = SSDConfig.from_file(path)
    assert isinstance(cfg.priors, _GridPriorsConfig) and cfg.priors.sizes == [0.2, 0.6]
    assert isinstance(cfg.backbone, _TinyBackboneConfig)
    assert SSDConfig.from_file(cfg.to_file(tmp_path / "again.json")) == cfg


def test_schema_drops_unregistered_types():
    PRIORS.register("_test_gone", config=_GridPriorsConfig)(lambda sizes: None)
    assert '"const": "_test_gone"' in json.dumps(SSDConfig.model_json_schema())
    PRIORS.unregister("_test_gone")
    assert '"const": "_test_gone"' not in json.dumps(SSDConfig.model_json_schema())


def test_merged_merges_a_component_dict_and_derives_the_class_count():
    base = ssdkit.presets.get("ssdlite320_mobilenet_v3")
    cfg = base.merged(postprocess={"iou_threshold": 0.3}, class_names=["cat", "dog"])
    assert cfg.postprocess.type == base.postprocess.type and cfg.postprocess.iou_threshold == 0.3
    assert cfg.postprocess.max_detections == base.postprocess.max_detections  # the rest kept
    assert (cfg.num_classes, cfg.class_names) == (3, ["cat", "dog"])
    assert base.merged(num_classes=5).class_names is None  # the old 90 names no longer fit
    assert base.merged(postprocess={"type": "soft"}).postprocess.type == "soft"  # another type replaces


def test_a_model_config_file_takes_class_names_alone_and_its_errors_suggest_keys(tmp_path):
    path = tmp_path / "m.yaml"
    ssdkit.presets.get("ssdlite320_mobilenet_v3").to_file(path)
    assert ssdkit.create_model(path, class_names=["a", "b", "c"]).num_classes == 4
    path.write_text(path.read_text() + "postproces: {}\n")
    with pytest.raises(ValueError, match=r"(?s)m\.yaml: not a model config.*did you mean 'postprocess'"):
        ssdkit.load(path)
