"""Reading YAML and JSON text from files a user (or a hostile party) wrote, at a bounded cost.

Both readers refuse a key given twice in one mapping (the last would silently win) and nesting
too deep for a recursive reader (YAML: `MAX_DEPTH`; JSON: Python's recursion limit). The YAML
reader also refuses more than `max_values` nodes, counted while parsing (so a huge file stops
early) and after alias expansion (`count_values`, so an alias bomb stops too). Errors are
ValueError, whose message the caller prefixes with the file or the override.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

__all__ = ["load_yaml", "load_json", "count_values", "MAX_DEPTH"]

# Real configs and COCO files nest a few levels; Python's recursion limit is about 1000.
MAX_DEPTH = 100


def count_values(data: Any, limit: int) -> int:
    """Values in nested dicts and lists, a shared (YAML alias) value counted at each use; stops
    counting past `limit`, so a self-containing or exponentially aliased structure costs little."""
    count, stack = 0, [data]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that counts nodes and depth while composing, and refuses duplicate keys."""

    max_nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nodes = getattr(self, "_nodes", 0) + 1
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._nodes > self.max_nodes:
                raise ValueError(f"holds more than {self.max_nodes} values")
            if self._depth > MAX_DEPTH:
                raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges; keys given next to it override the merged ones
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        line = key_node.start_mark.line + 1
                        raise ValueError(f"the key {key!r} is given twice in one mapping (line {line})")
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, max_values: int) -> Any:
    """`yaml.safe_load(text)` within the bounds above; yaml.YAMLError for malformed text."""
    loader = _BoundedLoader(text)
    loader.max_nodes = max_values
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    if count_values(data, max_values) > max_values:
        raise ValueError(
            f"holds more than {max_values} values once YAML aliases are expanded "
            "(an alias bomb, or a structure that contains itself?)"
        )
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice in one object")
        out[key] = value
    return out


def load_json(text: str) -> Any:
    """`json.loads(text)` refusing duplicate keys and deep nesting; json.JSONDecodeError for malformed text."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:  # json's C parser checks its depth against the interpreter's limit
        raise ValueError("nested too deeply (JSON arrays or objects inside each other hundreds of levels)") from None
