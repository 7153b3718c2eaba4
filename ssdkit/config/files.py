"""Config files: reading YAML/JSON safely and at bounded cost, writing them back, and finding the
run configs (recipes) shipped in `ssdkit/config/recipes/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ssdkit.config.parsing import count_values, load_json, load_yaml

__all__ = ["read_config_file", "write_config_file", "config_path", "example_configs", "MAX_CONFIG_BYTES", "MAX_CONFIG_VALUES"]

# Bounds on what reading a hostile config file can cost; a real one (even with MAX_CLASSES class
# names) stays far below them.
MAX_CONFIG_BYTES = 32 << 20
MAX_CONFIG_VALUES = 1_000_000


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML (.yaml/.yml, safe loader) or JSON (.json) config file, with
    clear errors, and bounded cost on hostile files (size; values counted while parsing and after
    alias expansion; nesting depth); a key given twice in one mapping is refused."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes is too large for a config (limit {MAX_CONFIG_BYTES})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"{path}: not a text file, so not a YAML or JSON config; a checkpoint or weights file loads with "
            "ssdkit.load(path), or with --weights after a config"
        ) from None
    is_json = path.suffix.lower() == ".json"
    try:
        data = load_json(text) if is_json else load_yaml(text, MAX_CONFIG_VALUES)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid {'JSON' if is_json else 'YAML'}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of config fields, got {type(data).__name__}")
    if is_json and count_values(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ValueError(f"{path}: holds more than {MAX_CONFIG_VALUES} values; a config holds far fewer")
    return data


def write_config_file(path: str | Path, data: dict[str, Any]) -> Path:
    """Write `data` as JSON (.json) or YAML (any other suffix), in the order given."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


RECIPES = Path(__file__).with_name("recipes")


def example_configs() -> list[str]:
    """Names of the run configs shipped with ssdkit (`ssdkit train NAME` runs one)."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def config_path(value: str | Path) -> Path:
    """A run config file: `value` itself when it is a file, else the shipped example of that name."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = RECIPES / f"{value}.yaml"
    if path.suffix == "" and shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"run config not found: {value} (neither a file nor a shipped example; examples: "
        f"{', '.join(example_configs()) or 'none'})"
    )
