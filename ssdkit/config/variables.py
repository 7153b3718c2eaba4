"""`${NAME}` in a run config's strings: data roots from the environment or the command line.

A shipped recipe cannot know where a user keeps VOC or COCO, so its paths name a variable:
`root: [${VOC_ROOT}/VOC2007, ${VOC_ROOT}/VOC2012]`. Each `${NAME}` (letters, digits, `_`) is
replaced by the value given for NAME (`ssdkit train --data-root DIR` gives every `*_ROOT`
variable), else by the environment variable NAME; an unset one is an error naming the key
and the remedy. A run folder's `config.yaml` holds the expanded paths, so it repeats the run.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

__all__ = ["expand_variables", "variables_in", "root_variables", "data_root_variables"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def variables_in(data: Any) -> list[str]:
    """Names of the `${NAME}` variables that the strings of `data` (nested dicts and lists) use, in order."""
    found: dict[str, None] = {}
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.update(dict.fromkeys(_VAR.findall(item)))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
    return list(found)


def root_variables(data: Any, value: str) -> dict[str, str]:
    """`{NAME: value}` for each `*_ROOT` variable `data` uses (what `--data-root DIR` sets)."""
    return {name: value for name in variables_in(data) if name.endswith("_ROOT")}


def data_root_variables(config: str, overrides: Any = (), data_root: Optional[str] = None) -> dict[str, str]:
    """What `--data-root DIR` means for the run config `config` (a file or a shipped name) and its
    `--set` overrides: DIR for each `*_ROOT` variable they use; {} without a data root."""
    if data_root is None:
        return {}
    from ssdkit.config.files import config_path, read_config_file

    return root_variables([read_config_file(config_path(config)), list(overrides)], data_root)


def expand_variables(
    data: Any, given: Optional[Mapping[str, str]] = None, *, environ: Optional[Mapping[str, str]] = None
) -> Any:
    """A copy of `data` with every `${NAME}` replaced: `given` first, then `environ` (default: os.environ)."""
    env = os.environ if environ is None else environ
    given = given or {}

    def expand(text: str, key: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in given:
                return str(given[name])
            if name in env:
                return env[name]
            what = "the data root" if name.endswith("_ROOT") else "a value"
            remedy = " or pass --data-root DIR (ssdkit train and ssdkit eval)" if name.endswith("_ROOT") else ""
            raise ValueError(
                f"{key}: ${{{name}}} is not set; it names {what} of this config: set the environment "
                f"variable {name}{remedy}, or override the key with --set {key}=..."
            )

        return _VAR.sub(value, text)

    def walk(item: Any, key: str) -> Any:
        if isinstance(item, str):
            return expand(item, key) if "${" in item else item
        if isinstance(item, dict):
            return {k: walk(v, f"{key}.{k}" if key else str(k)) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(item)]
        return item

    return walk(data, "")
