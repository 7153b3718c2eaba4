"""Write docs/config-reference.md from the configs' JSON schemas.

    python scripts/gen_config_reference.py           # rewrite the page
    python scripts/gen_config_reference.py --check   # exit 1 when the page is stale

The model part comes from `ssdkit.SSDConfig.model_json_schema()`, whose component fields are
tagged unions of every registered type; the run part (data, train, eval) from
`ssdkit.config.RunConfig.model_json_schema()` when `ssdkit.engine` imports. Only components
defined in `ssdkit` modules are listed: plugins and anything registered at run time (tests,
notebooks) are left out, so the page depends on the code alone. tests/test_config_reference.py
regenerates the page in memory and fails when the committed one differs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional, get_args

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import ssdkit  # noqa: E402
from ssdkit import registry  # noqa: E402

PAGE = ROOT / "docs" / "config-reference.md"
COMMAND = "python scripts/gen_config_reference.py"

Schema = dict[str, Any]

_ROLE_TITLES = {
    "backbone": "Backbones",
    "head": "Heads",
    "priors": "Prior generators",
    "matcher": "Matchers",
    "box_coder": "Box coders",
    "loss": "Losses",
    "postprocess": "Post-processing (NMS)",
}


# ---------- which components belong on the page ----------


def is_builtin(entry: registry.Entry) -> bool:
    """True for a component whose object and config are both defined in an `ssdkit.` module."""
    modules = (getattr(entry.obj, "__module__", ""), entry.config.__module__)
    return all(m == "ssdkit" or m.startswith("ssdkit.") for m in modules)


def builtin_names(reg: registry.Registry) -> list[str]:
    return sorted(name for name, entry in reg._entries.items() if is_builtin(entry))


def summary(obj: Any) -> str:
    """First paragraph of a docstring, on one line ('' without one)."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


# ---------- schema fragments -> text ----------


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    ref = node.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if ref else node


def _ref_name(node: Schema) -> Optional[str]:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def type_text(node: Schema) -> str:
    """A schema node as a short, Python-like type: `float`, `list[float]`, `(int, int)`, `"a" | "b"`."""
    name = _ref_name(node)
    if name is not None:
        return name
    if "const" in node:
        return _literal(node["const"])
    if "enum" in node:
        return " | ".join(_literal(v) for v in node["enum"])
    if "anyOf" in node or "oneOf" in node:
        return " | ".join(type_text(n) for n in node.get("anyOf", node.get("oneOf")))
    kind = node.get("type")
    if kind == "array":
        if "prefixItems" in node:
            return "(" + ", ".join(type_text(n) for n in node["prefixItems"]) + ")"
        return f"list[{type_text(node.get('items', {}))}]"
    if kind == "object":
        extra = node.get("additionalProperties")
        return f"dict[str, {type_text(extra)}]" if isinstance(extra, dict) else "mapping"
    basic = {"number": "float", "integer": "int", "string": "str", "boolean": "bool", "null": "null"}
    return basic.get(kind, "any")


_BOUNDS = (("minimum", ">= "), ("exclusiveMinimum", "> "), ("maximum", "<= "), ("exclusiveMaximum", "< "))


def constraints_text(node: Schema) -> str:
    """Bounds, lengths and patterns of a node and of its items, e.g. `> 0; at least 1 item; each: > 0`."""
    parts: list[str] = []
    for alt in node.get("anyOf", []):
        if alt.get("type") != "null":
            inner = constraints_text(alt)
            if inner:
                parts.append(inner)
    parts += [f"{sign}{_literal(node[key])}" for key, sign in _BOUNDS if key in node]
    if "prefixItems" not in node:  # a tuple's length is already in its type
        lo, hi = node.get("minItems"), node.get("maxItems")
        if lo is not None and lo == hi:
            parts.append(f"exactly {lo} items")
        else:
            if lo:
                parts.append(f"at least {lo} item{'s' * (lo != 1)}")
            if hi is not None:
                parts.append(f"at most {hi} items")
    if "minLength" in node:
        parts.append(f"length >= {node['minLength']}")
    if "maxLength" in node:
        parts.append(f"length <= {node['maxLength']}")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    items = node.get("items")
    if isinstance(items, dict):
        inner = constraints_text(items)
        if inner:  # nested lists: "each: > 0" already names the innermost values
            parts.append(inner if inner.startswith("each: ") else f"each: {inner}")
    for i, item in enumerate(node.get("prefixItems", [])):
        inner = constraints_text(item)
        if inner:
            parts.append(f"item {i}: {inner}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a `|` would end the cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def flow(value: Any) -> str:
    """A value in YAML flow style: `{type: ssd, iou_threshold: 0.5}`, `[1, 2]`, `"RGB"`."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return _literal(value)


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "none"}


def component_default(value: Any) -> str:
    """A component config as `{type: name, ...}` listing only the fields that differ from that type's defaults."""
    if value is None:
        return "`null`"
    data = value.model_dump(mode="json")
    try:
        plain = type(value)(type=value.type).model_dump(mode="json")
    except Exception:  # the type has required fields: show them all
        plain = {}
    shown = {"type": value.type, **{k: v for k, v in data.items() if k != "type" and plain.get(k, object()) != v}}
    return f"`{flow(shown)}`"


def default_text(prop: Schema, required: bool, field: Any = None) -> str:
    """`field`: the pydantic FieldInfo, for a default made by a factory (absent from the schema)."""
    if required:
        return "**required**"
    if "default" in prop:
        return f"`{_literal(prop['default'])}`"
    if field is not None:
        return f"`{_literal(field.get_default(call_default_factory=True))}`"
    return "(computed)"


def field_rows(
    model: Schema,
    *,
    cls: Any = None,
    skip: tuple[str, ...] = ("type",),
    overrides: Optional[dict] = None,
) -> list[str]:
    """A Markdown table of a model schema's properties (in definition order); `cls`: the pydantic
    class the schema came from, for defaults made by a factory; `overrides`: {field: (type, default)}."""
    overrides = overrides or {}
    fields = cls.model_fields if cls is not None else {}
    required = set(model.get("required", []))
    rows = ["| field | type | default | constraints | description |", "| --- | --- | --- | --- | --- |"]
    for name, prop in model.get("properties", {}).items():
        if name in skip:
            continue
        info = fields.get(name)
        if name in overrides:
            typ, default = overrides[name]
        else:
            typ, default = type_text(prop), default_text(prop, name in required, info)
        about = prop.get("description") or (info.description if info is not None else None) or ""
        cells = [f"`{name}`", _cell(typ), default, _cell(constraints_text(prop)), _cell(about)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


# ---------- one component type ----------


def role_types(prop: Schema, defs: dict[str, Schema]) -> dict[str, str]:
    """A tagged-union property (possibly nullable, possibly a single `$ref`) -> {type name: def name}."""
    alternatives = [a for a in prop.get("anyOf", [prop]) if a.get("type") != "null"]
    found: dict[str, str] = {}
    for alt in alternatives:
        mapping = alt.get("discriminator", {}).get("mapping")
        if mapping:
            found.update({k: v.rsplit("/", 1)[-1] for k, v in mapping.items()})
        else:
            for ref in alt.get("oneOf", [alt]):
                name = _ref_name(ref)
                if name is not None:
                    found[defs[name]["properties"]["type"]["const"]] = name
    return found


def component_section(level: str, key: str, name: str, reg: registry.Registry, model: Schema) -> list[str]:
    """Heading, summary and field table of the registered type `name`; `key`: where it goes in a config."""
    entry = reg._entries[name]
    lines = [f"{level} `{key}: {{type: {name}}}`", ""]
    about = summary(entry.obj) or summary(entry.config)
    if about:
        lines += [about, ""]
    lines.append(f"Defined in `{entry.obj.__module__}`; config class `{entry.config.__name__}`.")
    lines.append("")
    if any(p != "type" for p in model.get("properties", {})):
        lines += field_rows(model, cls=entry.config)
    else:
        lines.append("No fields besides `type`.")
    lines.append("")
    return lines


# ---------- the page ----------


def _model_top_rows(schema: Schema) -> list[str]:
    # Component fields: their type and default come from SSDConfig itself, since a tagged
    # union's schema lists alternatives, and a default_factory has no JSON default.
    overrides = {}
    for field, info in ssdkit.SSDConfig.model_fields.items():
        if field in registry.ALL_REGISTRIES:
            if info.is_required():
                shown = "**required**"
            else:
                shown = component_default(info.get_default(call_default_factory=True))
            typ = f"[{registry.ALL_REGISTRIES[field].role} config](#{field})"
            if "anyOf" in schema["properties"][field]:
                typ += " | null"
            overrides[field] = (typ, shown)
        elif field == "preprocess":
            overrides[field] = ("[PreprocessConfig](#preprocess)", "see below")
    return field_rows(schema, cls=ssdkit.SSDConfig, skip=(), overrides=overrides)


def model_part() -> list[str]:
    schema = ssdkit.SSDConfig.model_json_schema()
    defs = schema["$defs"]
    lines = [
        "## Model: `ssdkit.SSDConfig`",
        "",
        summary(ssdkit.SSDConfig),
        "",
    ]
    lines += _model_top_rows(schema)
    lines += ["", "### preprocess", "", summary(ssdkit.PreprocessConfig), ""]
    lines += field_rows(defs["PreprocessConfig"], cls=ssdkit.PreprocessConfig, skip=())
    lines.append("")
    for field, reg in registry.ALL_REGISTRIES.items():
        mapping = role_types(schema["properties"][field], defs)
        names = [n for n in builtin_names(reg) if n in mapping]
        lines += [f"### {field}", "", f"{_ROLE_TITLES.get(field, field)}: registry `ssdkit.registry.{_reg_var(reg)}`."]
        lines += [f"Built-in types: {', '.join(f'`{n}`' for n in names)}.", ""]
        for name in names:
            lines += component_section("####", field, name, reg, defs[mapping[name]])
    return lines


def _reg_var(reg: registry.Registry) -> str:
    for var, value in vars(registry).items():
        if value is reg and var.isupper():
            return var
    raise LookupError(f"no module-level name for {reg!r}")


def _registry_fields(model_cls: type) -> dict[str, registry.Registry]:
    """Fields of a pydantic class that hold a component of some registry (see `ssdkit.config.model.component`)."""
    found = {}
    for field, info in model_cls.model_fields.items():
        candidates = list(info.metadata)
        for arg in get_args(info.annotation):
            candidates += list(getattr(arg, "__metadata__", ()))
        for meta in candidates:
            owner = getattr(getattr(meta, "func", None), "__self__", None)
            if isinstance(owner, registry.Registry):
                found[field] = owner
    return found


def _nested_models(model_cls: type) -> dict[str, type]:
    from pydantic import BaseModel

    found = {}
    for field, info in model_cls.model_fields.items():
        for t in (info.annotation, *get_args(info.annotation)):
            if isinstance(t, type) and issubclass(t, BaseModel) and not issubclass(t, registry.ComponentConfig):
                found[field] = t
    return found


def _section_for(
    path: str, model_cls: type, schema: Schema, defs: dict[str, Schema], skip_models: tuple[type, ...]
) -> list[str]:
    """A run-config section: its table, then its nested models and registry-valued fields."""
    lines = [f"{'#' * min(2 + path.count('.') + 1, 5)} `{path}`", ""]
    about = summary(model_cls)
    if about:
        lines += [about, ""]
    nested = {f: c for f, c in _nested_models(model_cls).items() if not issubclass(c, skip_models)}
    comps = _registry_fields(model_cls)
    overrides = {}
    for f, c in nested.items():
        overrides[f] = (f"[{c.__name__}](#{_anchor(f'{path}.{f}')})", "see below")
    for f, reg in comps.items():
        info = model_cls.model_fields[f]
        shown = "**required**" if info.is_required() else component_default(info.get_default(call_default_factory=True))
        overrides[f] = (f"[{reg.role} config](#{_anchor(f'{path} {reg.role} types')})", shown)
    lines += field_rows(schema, cls=model_cls, skip=(), overrides=overrides)
    lines.append("")
    for f, c in nested.items():
        lines += _section_for(f"{path}.{f}", c, _resolve(schema["properties"][f], defs), defs, skip_models)
    sub = "#" * min(2 + path.count(".") + 2, 6)
    for reg in sorted(set(comps.values()), key=lambda r: r.role):
        keys = [f"{path}.{f}" for f, r in comps.items() if r is reg]
        lines += [f"{sub} `{path}` {reg.role} types", ""]
        lines += [f"For {' and '.join(f'`{k}`' for k in keys)}; registry `ssdkit.registry.{_reg_var(reg)}`.", ""]
        for name in builtin_names(reg):
            entry = reg._entries[name]
            lines += component_section(sub + "#", keys[0], name, reg, entry.config.model_json_schema())
    return lines


def _anchor(title: str) -> str:
    """GitHub/mkdocs-style anchor of a heading (lower case, punctuation dropped, spaces to '-')."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def run_part() -> tuple[list[str], Optional[str]]:
    """The run config's sections, or ([], reason) when `ssdkit.engine` does not import."""
    try:
        from ssdkit.config import RunConfig
    except ImportError as exc:
        return [], f"{type(exc).__name__}: {exc}"
    schema = RunConfig.model_json_schema()
    defs = schema["$defs"]
    lines = ["## Run: `ssdkit.config.RunConfig`", "", summary(RunConfig), ""]
    lines.append(
        "Sections: `model` (an `SSDConfig`, [above](#model-ssdkitssdconfig)), "
        + ", ".join(f"`{f}`" for f in RunConfig.model_fields if f != "model")
        + ". Any field can be overridden on the command line as `section.field=value`."
    )
    lines.append("")
    for field, cls in _nested_models(RunConfig).items():
        if cls is ssdkit.SSDConfig:
            continue
        lines += _section_for(field, cls, _resolve(schema["properties"][field], defs), defs, (ssdkit.SSDConfig,))
    return lines, None


def generate() -> str:
    """The whole page, as text. Deterministic: sorted types, no addresses, no plugins."""
    run_lines, _ = run_part()
    lines = [
        "# Config reference",
        "",
        f"<!-- Generated by {COMMAND} from the configs' JSON schemas. Do not edit by hand. -->",
        "",
        "Every field of every built-in config, generated from `ssdkit.SSDConfig.model_json_schema()`"
        + (" and `ssdkit.config.RunConfig.model_json_schema()`" if run_lines else "")
        + f". Regenerate with `{COMMAND}`; a test fails when this page is stale.",
        "A component is selected by its `type`; its other fields are the ones listed under that type,",
        "and unknown fields are errors. Plugins' types are not listed here:",
        "`SSDConfig.model_json_schema()` includes them once they are installed.",
        "",
    ]
    lines += model_part()
    lines += run_lines
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from the generated text")
    args = parser.parse_args(argv)
    text = generate()
    _, why_no_run = run_part()
    if why_no_run:
        print(f"note: ssdkit.engine did not import, the run config is left out ({why_no_run})", file=sys.stderr)
    if args.check:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    tmp = PAGE.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, PAGE)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    # Before any registry lookup (plugins load lazily, on the first one): no plugin is imported.
    # Plugins would be filtered out anyway; this also keeps a broken one from warning here.
    os.environ[registry.DISABLE_ENV] = "1"
    raise SystemExit(main())
