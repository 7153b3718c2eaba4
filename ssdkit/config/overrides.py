"""Dotted `key=value` overrides of a config mapping, checked against the pydantic models.

`train.lr=0.01` sets data["train"]["lr"] = 0.01; the value is parsed as a YAML scalar or
flow collection (`0.01`, `true`, `[0.5, 0.8]`, `{type: tiny}`), never as Python. A key that
the config's model does not have is an error that names it and suggests the closest one.
Component fields (a `type` chosen from a registry) are checked against the config class of
the type the data names, so `model.backbone.width_mult` is known only for backbones that have it.

`validate_config(cls, data, source)` validates a whole mapping the same way for every config file
(model or run): errors name the source (the file), each field path, and the closest known key.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Optional, Sequence

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

from ssdkit.config.parsing import load_yaml
from ssdkit.registry import Registry

__all__ = [
    "ConfigKeyError",
    "ConfigValidationError",
    "apply_overrides",
    "parse_override",
    "fields_at",
    "unknown_key_hints",
    "validate_config",
]

M = typing.TypeVar("M", bound=BaseModel)


# An override sets one value: a list of class names at most.
MAX_OVERRIDE_VALUES = 200_000


def _short(item: str) -> str:
    return repr(item) if len(item) <= 80 else repr(item[:60] + " ...")


class ConfigKeyError(ValueError):
    """An override names a key the config does not have."""


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b=1' -> (['a', 'b'], 1)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override {item!r} must look like key=value, e.g. train.lr=0.01")
    try:
        value = load_yaml(raw, MAX_OVERRIDE_VALUES) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ValueError(f"override {item!r}: the value is not valid YAML: {exc}") from None
    except ValueError as exc:  # too many values (an alias bomb), too deep, a key twice
        raise ValueError(f"override {_short(item)}: {exc}") from None
    parts = key.split(".")
    if any(not p for p in parts):
        raise ValueError(f"override {item!r}: empty part in the key {key!r}")
    return parts, value


def _registry_of(info: Any) -> Optional[Registry]:
    """The registry whose configs a field holds (the BeforeValidator of `component(...)`), if any."""
    stack: list[Any] = [*getattr(info, "metadata", []), getattr(info, "annotation", None)]
    while stack:
        item = stack.pop()
        if isinstance(item, BeforeValidator):
            owner = getattr(item.func, "__self__", None)
            if isinstance(owner, Registry):
                return owner
        stack.extend(getattr(item, "__metadata__", ()))
        stack.extend(typing.get_args(item))
    return None


def _model_class(annotation: Any) -> Optional[type[BaseModel]]:
    """The pydantic model class inside `annotation` (through Optional / Annotated), if exactly one."""
    found: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            found.append(item)
        elif typing.get_origin(item) in (typing.Union, types.UnionType, typing.Annotated) or hasattr(
            item, "__metadata__"
        ):
            stack.extend(typing.get_args(item))
    return found[0] if len(set(found)) == 1 else None


def _child_class(cls: Optional[type[BaseModel]], name: str, raw: Any) -> Optional[type[BaseModel]]:
    """The model class of field `name` of `cls`, given the field's raw value (for a component's `type`)."""
    if cls is None or name not in cls.model_fields:
        return None
    info = cls.model_fields[name]
    registry = _registry_of(info)
    if registry is not None:
        kind = raw.get("type") if isinstance(raw, dict) else None
        if isinstance(kind, str) and kind in registry:
            return registry.config_class(kind)
        return None
    return _model_class(info.annotation)


def _default_raw(cls: Optional[type[BaseModel]], name: str) -> Any:
    """A field's default as plain data, to fill in before overriding one of its parts."""
    if cls is None or name not in cls.model_fields:
        return {}
    info = cls.model_fields[name]
    if info.is_required():
        return {}
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return {} if value is None else value


def _unknown(key: str, part: str, known: Sequence[str], where: str) -> ConfigKeyError:
    close = difflib.get_close_matches(part, list(known), n=1, cutoff=0.5)
    prefix = key[: len(key) - len(part)] if key.endswith(part) else ""
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    return ConfigKeyError(f"unknown key '{key}'{hint} known under '{where or '(top level)'}': {', '.join(known)}")


def fields_at(cls: type[BaseModel], data: Any, path: Sequence[str | int]) -> Optional[list[str]]:
    """The field names allowed at `path` of raw `data` validated by `cls`, or None when not a model there."""
    node: Any = data
    current: Optional[type[BaseModel]] = cls
    for part in path:
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node, current = node[part], None
            continue
        if not isinstance(node, dict):
            return None
        child = node.get(part) if part in node else _default_raw(current, str(part))
        current = _child_class(current, str(part), child)
        node = child
    return list(current.model_fields) if current is not None else None


def _wants_int(cls: type[BaseModel], name: str) -> bool:
    """Whether field `name` of `cls` takes an int and not a bool (pydantic would take True as 1)."""
    annotation = cls.model_fields[name].annotation
    kinds = {annotation, *typing.get_args(annotation)}
    return int in kinds and bool not in kinds


_EXCLUSIVE = {"train.max_steps": "epochs", "train.epochs": "max_steps"}


def apply_overrides(cls: type[BaseModel], data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply each `key=value` of `overrides` to a copy of the raw mapping `data`, in order."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        parts, value = parse_override(item)
        key = ".".join(parts)
        node: Any = data
        current: Optional[type[BaseModel]] = cls
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth])
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                    raise ConfigKeyError(f"override {item!r}: '{where}' is a list of {len(node)}; '{part}' is no index")
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node, current = node[idx], None
                continue
            if not isinstance(node, dict):
                raise ConfigKeyError(f"override {item!r}: '{where}' holds {node!r}, which has no key '{part}'")
            if current is not None and part not in current.model_fields:
                raise _unknown(key, part, list(current.model_fields), where)
            if last:
                if isinstance(value, bool) and current is not None and _wants_int(current, part):
                    raise ValueError(f"override {item!r}: '{key}' takes a whole number, not {value!r}")
                node[part] = value
                # The run length is given one way: setting one of these replaces the other.
                # (Unless both are set here: then validation says to give one.)
                other = _EXCLUSIVE.get(key)
                given_too = any(o.split("=", 1)[0].strip() == f"train.{other}" for o in overrides)
                if other and value is not None and node.get(other) is not None and not given_too:
                    node[other] = None
                break
            if not isinstance(node.get(part), (dict, list)):
                node[part] = _default_raw(current, part)
                if not isinstance(node[part], (dict, list)):
                    node[part] = {}
            current = _child_class(current, part, node[part])
            node = node[part]
    return data


def unknown_key_hints(cls: type[BaseModel], data: Any, errors: list[dict[str, Any]]) -> list[str]:
    """For pydantic's `extra_forbidden` errors, a line per unknown key with the closest known one."""
    lines = []
    for err in errors:
        if err.get("type") != "extra_forbidden":
            continue
        loc = list(err.get("loc", ()))
        # pydantic puts a tagged-union or validator name into loc at times; keep only real keys
        known = fields_at(cls, data, loc[:-1])
        if known is None:
            continue
        key = ".".join(str(p) for p in loc)
        lines.append(str(_unknown(key, str(loc[-1]), known, ".".join(str(p) for p in loc[:-1]))))
    return lines


class ConfigValidationError(ValidationError):
    """pydantic's `ValidationError` (the same `.errors()`, each with its field path in `loc`) whose
    message starts with the source (a file name) and ends with a "did you mean" line per unknown key."""

    source: str = "config"
    hints: Sequence[str] = ()

    def __str__(self) -> str:
        extra = ("\n" + "\n".join(self.hints)) if self.hints else ""
        return f"{self.source}: {super().__str__()}{extra}"


def validate_config(cls: type[M], data: Any, source: str) -> M:
    """`cls.model_validate(data)`; a failure is a `ConfigValidationError` naming `source` and suggesting
    the closest key for each unknown one (a plain ValueError with the same message should pydantic
    refuse to rebuild one of its errors)."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        hints = unknown_key_hints(cls, data, exc.errors())
        try:
            err = ConfigValidationError.from_exception_data(exc.title, exc.errors())
        except Exception:  # an error type pydantic cannot rebuild (a plugin's custom one)
            extra = ("\n" + "\n".join(hints)) if hints else ""
            raise ValueError(f"{source}: {exc}{extra}") from exc
        err.source, err.hints = source, hints
        raise err from exc
