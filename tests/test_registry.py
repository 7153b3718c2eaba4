"""Registry: lookup, helpful errors, duplicate and bad registrations, build()."""

from __future__ import annotations

import inspect

import pydantic
import pytest

from ssdkit import presets
from ssdkit.registry import (
    ALL_REGISTRIES,
    BOX_CODERS,
    DATASETS,
    MATCHERS,
    PRIORS,
    ComponentConfig,
    Registry,
    UnknownComponentError,
    annotated_config,
    constructor_params,
)


class _Cfg(ComponentConfig):
    type: str = "alpha"
    size: int = 3


@pytest.fixture
def reg() -> Registry:
    """A fresh registry holding 'alpha' and 'alphabet' (never the global ones)."""
    r = Registry("widget")

    @r.register("alpha", config=_Cfg)
    def alpha(size, **context):
        return ("alpha", size, context)

    @r.register("alphabet", config=_Cfg)
    class Alphabet:
        def __init__(self, size):
            self.size = size

    return r


def test_names_are_sorted_and_complete(reg):
    assert reg.names() == ["alpha", "alphabet"]
    assert "alpha" in reg and "beta" not in reg
    assert set(MATCHERS.names()) >= {"ssd"} and MATCHERS.names() == sorted(MATCHERS.names())
    assert set(ALL_REGISTRIES) == {"backbone", "head", "priors", "matcher", "box_coder", "loss", "postprocess"}


def test_unknown_name_lists_known_and_suggests_closest(reg):
    with pytest.raises(UnknownComponentError) as err:
        reg.get("alpah")
    msg = str(err.value)
    assert msg == "unknown widget 'alpah'; did you mean 'alpha'? known: alpha, alphabet"
    assert isinstance(err.value, KeyError)  # callers may catch it as a KeyError
    with pytest.raises(KeyError, match="did you mean 'ssd'"):
        MATCHERS.get("sdd")


def test_unknown_name_without_close_match_still_lists_known(reg):
    with pytest.raises(UnknownComponentError) as err:
        reg.config_class("zzzzzz")
    assert "did you mean" not in str(err.value)
    assert str(err.value) == "unknown widget 'zzzzzz'; known: alpha, alphabet"
    with pytest.raises(UnknownComponentError, match=r"known: \(none\)"):
        Registry("empty").get("x")


def test_duplicate_registration_names_the_first_origin(reg):
    def impostor(size):
        return None

    with pytest.raises(ValueError) as err:
        reg.register("alpha", config=_Cfg)(impostor)
    msg = str(err.value)
    assert "widget 'alpha' is already registered by" in msg
    assert f"{__name__}.reg.<locals>.alpha" in msg  # where the first one lives
    assert "impostor" in msg  # and what tried again
    assert reg.get("alpha").__name__ == "alpha"  # the first one is kept


def test_builtin_duplicate_is_refused():
    with pytest.raises(ValueError, match="ssdkit.priors.ssd.SSDPriors"):
        PRIORS.register("ssd", config=ComponentConfig)(object)


@pytest.mark.parametrize("bad", [dict, None, pydantic.BaseModel, "ComponentConfig", _Cfg()])
def test_register_rejects_a_non_component_config(reg, bad):
    with pytest.raises(TypeError, match="must be a subclass of ssdkit.registry.ComponentConfig"):
        reg.register("gamma", config=bad)
    assert "gamma" not in reg


def test_build_passes_fields_and_context(reg):
    out = reg.build(_Cfg(type="alpha", size=7), extra=1)
    assert out == ("alpha", 7, {"extra": 1})
    assert reg.build(_Cfg(type="alphabet")).size == 3


def test_build_of_builtin_uses_the_config():
    coder = BOX_CODERS.build(BOX_CODERS.validate_config({"type": "ssd", "variances": [0.1, 0.1, 0.3, 0.3]}))
    assert coder.variances == (0.1, 0.1, 0.3, 0.3)


def test_every_builtin_accepts_its_config_fields():
    # a config field the constructor does not take would make build() fail at run time
    for reg in ALL_REGISTRIES.values():
        for name in reg.names():
            entry = reg.entry(name)
            fields = set(entry.config.model_fields) - {"type"}
            params = constructor_params(entry.obj)
            assert fields <= params or "kwargs" in params, (reg.role, name, fields - params)


def test_unregister(reg):
    reg.unregister("alpha")
    assert reg.names() == ["alphabet"]
    reg.unregister("alpha")  # absent: no error
    reg.register("alpha", config=_Cfg)(lambda size: size)  # the name is free again
    assert reg.build(_Cfg()) == 3


def test_validate_config(reg):
    cfg = reg.validate_config({"type": "alpha", "size": 4})
    assert isinstance(cfg, _Cfg) and cfg.size == 4
    assert reg.validate_config(cfg) is cfg
    with pytest.raises(ValueError, match="needs a 'type'; known: alpha, alphabet"):
        reg.validate_config({"size": 4})
    with pytest.raises(ValueError, match="unknown widget 'alphabt'; did you mean 'alphabet'"):
        reg.validate_config({"type": "alphabt"})
    with pytest.raises(pydantic.ValidationError):
        reg.validate_config({"type": "alpha", "size": "big"})


def test_unknown_name_with_plugins_off_says_so_instead_of_a_lookalike(reg, monkeypatch):
    monkeypatch.setenv("SSDKIT_DISABLE_PLUGINS", "1")
    with pytest.raises(UnknownComponentError) as err:
        reg.get("alpah")
    assert str(err.value) == (
        "unknown widget 'alpah'; plugin discovery is off (SSDKIT_DISABLE_PLUGINS=1): no plugin's components "
        "are registered; known: alpha, alphabet"
    )


def test_components_are_named_by_their_registered_name(reg):
    class Gadget:
        pass

    reg.register("gadget", config=ComponentConfig)(Gadget)
    assert reg.name_of(Gadget()) == "gadget" and reg.name_of(Gadget) == "gadget"
    assert reg.name_of(3) == "int"  # registered nowhere: its class, never "<... object at 0x...>"


# ---------- one source of truth: a config and its component never disagree ----------
def _sample_config(reg: Registry, name: str) -> ComponentConfig:
    """The registered config with its own defaults; a config with required fields gets a shipped preset's values."""
    cls = reg.config_class(name)
    if all(not f.is_required() for f in cls.model_fields.values()):
        return cls()
    preset = {"ssd": "ssd300_vgg16"}[name] if reg is PRIORS else None
    assert preset is not None, f"{reg.role} '{name}' has required fields: give the test a sample config for it"
    return reg.validate_config(presets.get(preset).priors.model_dump())


def _context(reg: Registry) -> dict:
    """The build-time arguments of each role, as build_model gives them (small values)."""
    return {
        "head": {"in_channels": [8, 16], "num_anchors": [4, 6], "num_classes": 3},
        "loss": {"box_coder": BOX_CODERS.build(BOX_CODERS.validate_config({"type": "ssd"})), "matcher": object()},
    }.get(reg.role, {})


def _entries(registries):
    return [(reg, name) for reg in registries for name in reg.names()]


_MODEL_ENTRIES = _entries(ALL_REGISTRIES.values())


def _check_takes_its_registered_config_object(reg: Registry, name: str) -> None:
    entry = reg.entry(name)
    first = next(iter(inspect.signature(entry.obj).parameters.values()))
    assert first.name == "cfg" and entry.takes_config, (reg.role, name, first)
    assert annotated_config(entry.obj) is entry.config, (reg.role, name)
    # nothing but the config and the role's build-time arguments: no setting outside the config
    params = set(inspect.signature(entry.obj).parameters) - {"cfg"}
    assert params == set(reg.build_args), (reg.role, name, params)


@pytest.mark.parametrize(("reg", "name"), _MODEL_ENTRIES, ids=[f"{r.role}-{n}" for r, n in _MODEL_ENTRIES])
def test_every_builtin_takes_its_registered_config_object(reg, name):
    _check_takes_its_registered_config_object(reg, name)


@pytest.mark.parametrize(("reg", "name"), _MODEL_ENTRIES, ids=[f"{r.role}-{n}" for r, n in _MODEL_ENTRIES])
def test_a_component_built_from_its_config_holds_the_config_values(reg, name):
    cfg = _sample_config(reg, name)
    built = reg.build(cfg, **_context(reg))
    assert built.config == cfg and built.config is not cfg  # its own copy (registry.part_config)
    for field in type(cfg).model_fields:
        value = getattr(cfg, field)
        # None in a config means "derive it" (e.g. the paper's scales from s_min / s_max)
        if field != "type" and value is not None and hasattr(built, field):
            assert getattr(built, field) == value, (reg.role, name, field)


def _keyword_disagreements(reg: Registry, name: str) -> list[str]:
    """For a constructor taking the fields as keywords: fields it lacks, and defaults that differ from the config's."""
    entry = reg.entry(name)
    sig = inspect.signature(entry.obj)
    out = []
    for field, info in entry.config.model_fields.items():
        p = sig.parameters.get(field)
        if field == "type":
            continue
        if p is None:
            out.append(f"{field}: not a parameter")
        elif p.default is not inspect.Parameter.empty and (
            info.is_required() or p.default != info.get_default(call_default_factory=True)
        ):
            out.append(f"{field}: default {p.default!r} in the constructor, not the config's")
    return out


def test_keyword_style_check_catches_a_default_written_twice(reg):
    class Cfg(ComponentConfig):
        type: str = "twice"
        size: int = 3

    reg.register("twice", config=Cfg)(lambda size=4: size)
    assert _keyword_disagreements(reg, "twice") == ["size: default 4 in the constructor, not the config's"]
    assert _keyword_disagreements(reg, "alphabet") == []  # no default outside the config: nothing can differ


def test_every_dataset_agrees_with_its_config():
    import ssdkit.data  # noqa: F401  (registers the data sets)

    assert {"shapes", "voc", "coco"} <= set(DATASETS.names())
    for name in DATASETS.names():
        _check_takes_its_registered_config_object(DATASETS, name)


# ---------- config style, 0.1 style, and the role check ----------
class _StyleCfg(ComponentConfig):
    type: str = "styled"
    size: int = 5


def test_register_reads_the_config_class_from_the_cfg_annotation(reg):
    @reg.register("styled")
    class Styled:
        def __init__(self, cfg: _StyleCfg | None = None, *, extra: int = 0) -> None:
            self.cfg, self.extra = cfg, extra

    assert reg.config_class("styled") is _StyleCfg
    cfg = _StyleCfg(size=9)
    built = reg.build(cfg, extra=2)
    assert built.cfg is cfg and built.extra == 2  # the config object itself, not its fields


def test_register_without_a_config_class_anywhere_is_an_error(reg):
    with pytest.raises(TypeError, match=r"widget 'bare'.*config=MyConfig.*`cfg: MyConfig`"):
        reg.register("bare")(lambda size: size)
    assert "bare" not in reg


def test_build_checks_the_role_and_names_the_missing_member():
    from ssdkit.roles import PriorGenerator

    priors = Registry("prior generator", PriorGenerator, ())

    @priors.register("no_anchors", config=_StyleCfg)
    class NoAnchors:  # written for 0.1: fields as keywords, but no num_anchors
        def __init__(self, size):
            self.size = size

        def __call__(self, feature_sizes, image_size):
            return None

    with pytest.raises(TypeError) as err:
        priors.build(_StyleCfg(type="no_anchors"))
    msg = str(err.value)
    assert "prior generator 'no_anchors'" in msg and "NoAnchors" in msg
    assert "`num_anchors`" in msg and "ssdkit.roles.PriorGenerator" in msg
    assert "`__call__`" not in msg  # what it has is not listed


def test_build_of_a_module_role_refuses_a_plain_object():
    from ssdkit.roles import Backbone

    backbones = Registry("backbone", Backbone, (), module=True)

    @backbones.register("plain", config=_StyleCfg)
    class Plain:
        out_channels = [4]

        def __init__(self, cfg: _StyleCfg) -> None:
            pass

        def __call__(self, x):
            return [x]

    with pytest.raises(TypeError, match=r"backbone 'plain' \(.*Plain\) must be a torch.nn.Module, got Plain"):
        backbones.build(_StyleCfg(type="plain"))


def test_build_names_the_build_time_arguments_a_role_takes():
    with pytest.raises(
        TypeError, match=r"building head 'ssd' needs the keyword arguments \(in_channels, num_anchors, "
    ):
        ALL_REGISTRIES["head"].build(ALL_REGISTRIES["head"].validate_config({"type": "ssd"}), in_channels=[8])


def test_every_registry_states_its_protocol_and_build_arguments():
    from ssdkit import roles

    expected = {
        "backbone": (roles.Backbone, ()),
        "head": (roles.Head, ("in_channels", "num_anchors", "num_classes")),
        "priors": (roles.PriorGenerator, ()),
        "matcher": (roles.Matcher, ()),
        "box_coder": (roles.BoxCoder, ()),
        "loss": (roles.Loss, ("box_coder", "matcher")),
        "postprocess": (roles.Postprocess, ()),
    }
    assert {k: (r.protocol, r.build_args) for k, r in ALL_REGISTRIES.items()} == expected
    assert (DATASETS.protocol, DATASETS.build_args) == (roles.Dataset, ())
