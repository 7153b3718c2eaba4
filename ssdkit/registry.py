"""Registries: one per component role, filled by a decorator next to each component.

A part is one class and one decorator. Its pydantic config holds every default and bound; the
constructor takes that config object first (named `cfg`), then the role's build-time arguments
as keywords, and the config class is read from the `cfg` annotation::

    class MyPriorsConfig(ComponentConfig):
        type: str = "my_priors"
        sizes: list[float] = Field(..., description="one square side per level")

    @PRIORS.register("my_priors")
    class MyPriors:
        def __init__(self, cfg: MyPriorsConfig) -> None:
            self.config = part_config(cfg, MyPriorsConfig)  # its own copy; a TypeError for anything else

`Registry.build(cfg, **build_args)` calls `MyPriors(cfg, **build_args)`: the keyword arguments
of the role (`Registry.build_args`, e.g. a head's `in_channels`, `num_anchors`, `num_classes`). A constructor written for ssdkit 0.1 takes the config's fields as keywords
instead (and names its config with `register(name, config=...)`); build() then passes every
field except `type` as a keyword. Either way the built object is checked against the role's
protocol (`ssdkit.roles`), so a part that lacks what its role needs fails at build time with
its name and the missing member. See docs/config-and-registries.md.

Third-party packages register components from a module named in the entry-point group
``ssdkit.plugins``; discovery happens lazily on the first lookup and is turned off by
``SSDKIT_DISABLE_PLUGINS=1``.
"""

from __future__ import annotations

import difflib
import inspect
import os
import typing
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ConfigDict

from ssdkit.roles import (
    Backbone,
    BoxCoder,
    Dataset,
    Head,
    Loss,
    Matcher,
    Postprocess,
    PriorGenerator,
    missing_members,
)

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
    "part_config",
]

PLUGIN_GROUP = "ssdkit.plugins"
DISABLE_ENV = "SSDKIT_DISABLE_PLUGINS"

T = TypeVar("T")


C = TypeVar("C", bound=BaseModel)


def part_config(cfg: Any, cls: type[C]) -> C:
    """The config a built part keeps as `part.config`: its own copy of `cfg` (so that a later edit of
    the model's config cannot make the record disagree with what the part does), or `cls()`'s
    defaults when `cfg` is None. Anything else is a TypeError with the remedy: a part takes its config
    object, not its settings (ssdkit 0.1's `HardNMS(iou_threshold=0.5)` is `HardNMS(HardNMSConfig(iou_threshold=0.5))`)."""
    if cfg is None:
        return cls()
    if not isinstance(cfg, cls):
        part = cls.__name__.removesuffix("Config") or "Part"
        raise TypeError(
            f"expected a {cls.__name__}, got {type(cfg).__name__} {cfg!r}: a part takes its config object, "
            f"e.g. {part}({cls.__name__}(field=value))"
        )
    return cfg.model_copy(deep=True)


_FROM_ANNOTATION: Any = object()  # register(name) without config=: read it from the `cfg` annotation


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
    takes_config: bool  # called as obj(cfg, **context); else obj(**fields, **context), the 0.1 way


def _origin(obj: Any) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"


def _signature(obj: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)  # of a class: its __init__ without self
    except (TypeError, ValueError):  # a builtin without a signature
        return None


def _first_param(obj: Callable[..., Any]) -> inspect.Parameter | None:
    sig = _signature(obj)
    params = list(sig.parameters.values()) if sig is not None else []
    return params[0] if params else None


def takes_config(obj: Callable[..., Any]) -> bool:
    """True when `obj`'s first parameter is `cfg`: build() then passes the config object itself."""
    first = _first_param(obj)
    return first is not None and first.name == "cfg" and first.kind is not inspect.Parameter.KEYWORD_ONLY


def annotated_config(obj: Callable[..., Any]) -> type[ComponentConfig] | None:
    """The ComponentConfig subclass named by the annotation of `obj`'s `cfg` parameter (`X` or
    `X | None`), or None when it names none."""
    if not takes_config(obj):
        return None
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hint = typing.get_type_hints(target).get("cfg")
    except Exception:  # noqa: BLE001  (an annotation that does not resolve: ask for config= instead)
        return None
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, ComponentConfig):
            return candidate
    return None


class Registry:
    """A name -> (component, config class) table for one role.

    protocol: what a built component must provide (`ssdkit.roles`); checked by build().
    build_args: the keyword arguments the role passes to every component at build time (None: not
        fixed, for registries made in tests and by users).
    module: built components must be `torch.nn.Module`s (their parameters belong to the model).
    """

    def __init__(
        self,
        role: str,
        protocol: type | None = None,
        build_args: tuple[str, ...] | None = None,
        *,
        module: bool = False,
    ) -> None:
        if protocol is not None and not isinstance(protocol, type):  # ssdkit 0.1's Registry(role, "context text")
            raise TypeError(
                f"registry '{role}': protocol must be a class (a typing.Protocol, see ssdkit.roles), got {protocol!r}; "
                "the keyword arguments a role passes at build time are build_args=(...)"
            )
        self.role = role
        self.protocol = protocol
        self.build_args = build_args
        self.module = module
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, config: Any = _FROM_ANNOTATION) -> Callable[[T], T]:
        """Decorator registering `obj` under `name`, validated by `config` (a ComponentConfig subclass); without
        `config`, the class the constructor's `cfg` parameter is annotated with."""
        infer = config is _FROM_ANNOTATION
        if not infer and not (isinstance(config, type) and issubclass(config, ComponentConfig)):
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
            cls = annotated_config(obj) if infer else config  # type: ignore[arg-type]
            if cls is None:
                raise TypeError(
                    f"{self.role} '{name}' ({_origin(obj)}): give its config class, either as register('{name}', "
                    "config=MyConfig) or as the annotation of its first constructor parameter, `cfg: MyConfig`"
                )
            self._entries[name] = Entry(name, obj, cls, _origin(obj), takes_config(obj))  # type: ignore[arg-type]
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
        """Instantiate the component `cfg.type`: `obj(cfg, **context)` when its constructor takes the config
        object (`cfg` first), else `obj(**fields, **context)`; then check it provides what the role needs."""
        e = self.entry(cfg.type)
        if self.build_args is not None and set(context) != set(self.build_args):
            raise TypeError(
                f"building {self.role} '{e.name}' needs the keyword arguments ({', '.join(self.build_args)}), "
                f"got ({', '.join(context)})"
            )
        if e.takes_config:
            built = e.obj(cfg, **context)
        else:
            built = e.obj(**{k: getattr(cfg, k) for k in type(cfg).model_fields if k != "type"}, **context)
        self.check_role(built, e.name)
        return built

    def check_role(self, obj: Any, name: str) -> None:
        """Raise TypeError naming the component and the member when `obj` lacks what this role needs."""
        where = f"{self.role} '{name}' ({self._entries[name].origin if name in self._entries else type(obj)})"
        if self.module:
            from torch import nn

            if not isinstance(obj, nn.Module):
                raise TypeError(f"{where} must be a torch.nn.Module, got {type(obj).__name__}")
        if self.protocol is None:
            return
        missing = missing_members(obj, self.protocol)
        if missing:
            raise TypeError(
                f"{where} does not provide {', '.join(f'`{m}`' for m in missing)}, which every {self.role} needs "
                f"(ssdkit.roles.{self.protocol.__name__}: {(self.protocol.__doc__ or '').split(';')[0].strip()})"
            )

    def __repr__(self) -> str:
        return f"Registry({self.role!r}, names={sorted(self._entries)})"


BACKBONES = Registry("backbone", Backbone, (), module=True)
HEADS = Registry("head", Head, ("in_channels", "num_anchors", "num_classes"), module=True)
PRIORS = Registry("prior generator", PriorGenerator, ())
MATCHERS = Registry("matcher", Matcher, ())
BOX_CODERS = Registry("box coder", BoxCoder, ())
LOSSES = Registry("loss", Loss, ("box_coder", "matcher"))
POSTPROCESS = Registry("postprocess", Postprocess, ())
# Not in ALL_REGISTRIES: that maps SSDConfig's fields, and a data set belongs to the run, not the model.
DATASETS = Registry("dataset", Dataset, ())

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
    """The settings a registered object accepts: its parameters' names, and for a constructor that takes
    its config object (`cfg`), that config's fields (used by tests and error messages)."""
    sig = _signature(obj)
    names = {p.name for p in sig.parameters.values() if p.name != "self"} if sig is not None else set()
    config = annotated_config(obj)
    if config is not None:
        names |= set(config.model_fields) - {"type"}
    return names
