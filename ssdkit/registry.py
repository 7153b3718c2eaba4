"""Registries: one per component role, filled by a decorator next to each component.

A component is registered with its pydantic config class::

    @PRIORS.register("my_priors", config=MyPriorsConfig)
    class MyPriors:
        def __init__(self, sizes: list[float], *, image_size): ...

`Registry.build(cfg, **context)` calls the registered object with every field of
`cfg` (except `type`) as a keyword argument, plus the context that the role defines
(see docs/registries.md). Third-party packages register components from a module
named in the entry-point group ``ssdkit.plugins``; discovery happens lazily on the
first lookup and is turned off by ``SSDKIT_DISABLE_PLUGINS=1``.
"""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ComponentConfig",
    "Registry",
    "UnknownComponentError",
    "BACKBONES",
    "HEADS",
    "PRIORS",
    "MATCHERS",
    "BOX_CODERS",
    "LOSSES",
    "POSTPROCESS",
    "DATASETS",
    "ALL_REGISTRIES",
    "load_plugins",
]

PLUGIN_GROUP = "ssdkit.plugins"
DISABLE_ENV = "SSDKIT_DISABLE_PLUGINS"

T = TypeVar("T")


class ComponentConfig(BaseModel):
    """Base of every component config: a `type` naming the registered component.

    Subclasses add the component's own fields; unknown fields are rejected.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True, allow_inf_nan=False)

    type: str


class UnknownComponentError(KeyError):
    """Raised for a name no registry entry has; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Callable[..., Any]
    config: type[BaseModel]  # a ComponentConfig subclass (SSDConfig for ssdkit.presets.PRESETS)
    origin: str  # "module.qualname", shown when a name is registered twice


def _origin(obj: Any) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    """A name -> (component, config class) table for one role."""

    def __init__(self, role: str, context: str = "") -> None:
        self.role = role
        self.context = context  # documents the extra keyword arguments build() passes
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, config: type[ComponentConfig]) -> Callable[[T], T]:
        """Decorator registering `obj` under `name`, validated by `config`."""
        if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
            raise TypeError(
                f"{self.role} '{name}': config must be a subclass of ssdkit.registry.ComponentConfig, got {config!r}"
            )

        def deco(obj: T) -> T:
            if name in self._entries:
                first = self._entries[name]
                raise ValueError(
                    f"{self.role} '{name}' is already registered by {first.origin}; "
                    f"cannot register it again from {_origin(obj)}"
                )
            self._entries[name] = Entry(name, obj, config, _origin(obj))
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove `name` (mainly for tests and interactive sessions)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def entry(self, name: str) -> Entry:
        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self._unknown_message(name)) from None

    def get(self, name: str) -> Callable[..., Any]:
        return self.entry(name).obj

    def config_class(self, name: str) -> type[ComponentConfig]:
        return self.entry(name).config

    def _unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        # With plugins off or broken the name is most likely a plugin's: say that, rather than point
        # at whichever built-in happens to be spelt alike ('mini' -> 'tiny').
        note = _plugin_note()
        close = [] if note else difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
        hint = f"; {note};" if note else f"; did you mean '{close[0]}'?" if close else ";"
        return f"unknown {self.role} '{name}'{hint} known: {', '.join(known) or '(none)'}"

    def name_of(self, obj: Any) -> str:
        """The registered name of a built component (or of a registered class/function); for an object
        registered nowhere here, its class name. For messages: never `<... object at 0x...>`."""
        for entry in self._entries.values():
            if obj is entry.obj or (isinstance(entry.obj, type) and type(obj) is entry.obj):
                return entry.name
        return type(obj).__name__

    def validate_config(self, value: Any) -> ComponentConfig:
        """Turn a dict (or a config instance) into the registered config class."""
        # Only ValueError becomes a pydantic ValidationError inside a validator: never let a
        # KeyError (unknown name) or TypeError (unhashable `type`) escape from here.
        if isinstance(value, ComponentConfig):
            name = value.type
        elif isinstance(value, dict):
            if "type" not in value:
                raise ValueError(f"{self.role} config needs a 'type'; known: {', '.join(self.names())}")
            name = value["type"]
        else:
            raise ValueError(f"a {self.role} config must be a mapping with a 'type' key, got {value!r}")
        if not isinstance(name, str):
            raise ValueError(f"{self.role} 'type' must be a string naming a registered {self.role}, got {name!r}")
        load_plugins()
        if name not in self._entries:
            raise ValueError(self._unknown_message(name))
        cls = self._entries[name].config
        if isinstance(value, ComponentConfig):
            return value if isinstance(value, cls) else cls.model_validate(value.model_dump())
        return cls.model_validate(value)

    def build(self, cfg: ComponentConfig, **context: Any) -> Any:
        """Instantiate the component `cfg.type` with cfg's fields and the role's context."""
        e = self.entry(cfg.type)
        kwargs = {k: getattr(cfg, k) for k in type(cfg).model_fields if k != "type"}
        return e.obj(**kwargs, **context)

    def __repr__(self) -> str:
        return f"Registry({self.role!r}, names={sorted(self._entries)})"


BACKBONES = Registry("backbone", context="() -> nn.Module with .out_channels: list[int]")
HEADS = Registry("head", context="(in_channels: list[int], num_anchors: list[int], num_classes: int)")
PRIORS = Registry("prior generator", context="() -> object with .num_anchors and __call__(feature_sizes, image_size)")
MATCHERS = Registry("matcher", context="()")
BOX_CODERS = Registry("box coder", context="()")
LOSSES = Registry("loss", context="(box_coder, matcher)")
POSTPROCESS = Registry("postprocess", context="()")
# Not in ALL_REGISTRIES: that maps SSDConfig's fields, and a data set belongs to the run, not the model.
DATASETS = Registry("dataset", context="() -> ssdkit.data.DetectionDataset")

ALL_REGISTRIES: dict[str, Registry] = {
    "backbone": BACKBONES,
    "head": HEADS,
    "priors": PRIORS,
    "matcher": MATCHERS,
    "box_coder": BOX_CODERS,
    "loss": LOSSES,
    "postprocess": POSTPROCESS,
}

_plugins_loaded = False
_plugins_failed: dict[str, str] = {}  # entry-point name -> "ErrorType: message", from the last discovery


def _plugins_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


def _plugin_note() -> str:
    """Why a plugin's component may be missing ("" when discovery is on and every plugin loaded)."""
    if _plugins_disabled():
        return (
            f"plugin discovery is off ({DISABLE_ENV}={os.environ[DISABLE_ENV]}): no plugin's components are registered"
        )
    if _plugins_failed:
        failed = ", ".join(f"'{k}' ({v})" for k, v in sorted(_plugins_failed.items()))
        if len(_plugins_failed) == 1:
            return f"plugin {failed} failed to load: its components are missing"
        return f"plugins {failed} failed to load: their components are missing"
    return ""


def load_plugins(force: bool = False) -> list[str]:
    """Import every module in the ``ssdkit.plugins`` entry-point group, once.

    A plugin that fails to import is reported with a warning naming it and skipped.
    Returns the names of the plugins loaded by this call.
    """
    global _plugins_loaded
    if (_plugins_loaded and not force) or _plugins_disabled():
        return []
    _plugins_loaded = True
    _plugins_failed.clear()
    loaded = []
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not take ssdkit down
            _plugins_failed[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"ssdkit plugin '{ep.name}' ({ep.value}) failed to load and is skipped: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            loaded.append(ep.name)
    return loaded


def constructor_params(obj: Callable[..., Any]) -> set[str]:
    """Names a registered object accepts as keywords (used by tests and error messages)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    return {p.name for p in inspect.signature(target).parameters.values() if p.name != "self"}
