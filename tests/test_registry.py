"""Registry: lookup, helpful errors, duplicate and bad registrations, build()."""

from __future__ import annotations

import pydantic
import pytest

from ssdkit.registry import (
    ALL_REGISTRIES,
    BOX_CODERS,
    MATCHERS,
    PRIORS,
    ComponentConfig,
    Registry,
    UnknownComponentError,
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
