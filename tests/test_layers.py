"""ssdkit's layers, and the test that its imports respect them.

Every module of ``ssdkit/`` belongs to one layer; a module may import modules of its own layer
or of lower layers, never of a higher one, and no modules import each other in a circle. Every
import counts, including those inside functions (a lazy import is still a dependency). The
table is `TABLE` below, lowest layer first; docs/architecture.md draws the same layers, and a
test checks that the drawing names every entry of the table in its layer.

Why the weights files are foundation: backbones load ImageNet weights and check weights paths
(`ssdkit.io.weights.read_state_dict`, `reject_url`, `ssdkit.io.pretrained`'s catalogue) and
run configs check a path is not a URL, so these modules sit below the components; they read and
write tensors by name and import nothing of ssdkit above them. The TensorFlow graph converter
builds a whole model, so it is `ssdkit.io.tfod.from_tf_object_detection` (upper), not part of
`ssdkit.io.convert`.

Exceptions: ``ssdkit/__init__.py`` gathers the public surface, so it may import anything; and
any module may read ``__version__`` from the package (``from ssdkit import __version__``), a
constant the package defines before it imports a submodule.

"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssdkit"

LAYERS = ("foundation", "components", "model", "upper", "cli")

# Module (dotted, without the leading "ssdkit.") -> layer; an entry ending in "." covers every
# module under that package (a package's own __init__ is listed by its name). An exact entry
# wins over a prefix, and a longer prefix over a shorter one. ssdkit/io/ is split by module.
TABLE: dict[str, str] = {
    "registry": "foundation",
    "roles": "foundation",  # the protocols the registry checks parts against
    "boxes": "foundation",
    "ranking": "foundation",
    "categories": "foundation",
    "text": "foundation",
    "devices": "foundation",
    "resize": "foundation",
    "config": "foundation",
    "config.": "foundation",
    "io": "foundation",  # the package's __init__: it imports nothing
    "io.paths": "foundation",
    "io.weights": "foundation",
    "io.convert": "foundation",
    "io.pretrained": "foundation",
    "io.picture_files": "foundation",
    "backbones": "components",
    "backbones.": "components",
    "heads": "components",
    "heads.": "components",
    "priors": "components",
    "priors.": "components",
    "matchers": "components",
    "matchers.": "components",
    "box_coders": "components",
    "box_coders.": "components",
    "losses": "components",
    "losses.": "components",
    "postprocess": "components",
    "postprocess.": "components",
    "model": "model",
    "build": "model",
    "preprocess": "model",
    "predict": "model",
    "draw": "model",
    "presets": "model",
    "io.pictures": "model",
    "data": "upper",
    "data.": "upper",
    "engine": "upper",
    "engine.": "upper",
    "evaluation": "upper",
    "evaluation.": "upper",
    "analysis": "upper",
    "analysis.": "upper",
    "export": "upper",
    "export.": "upper",
    "runtime": "upper",
    "runtime.": "upper",
    "io.sources": "upper",
    "io.tfod": "upper",
    "io.tfod.": "upper",
    "cli": "cli",
    "__main__": "cli",  # `python -m ssdkit`
    "cli.": "cli",
}


def _modules() -> dict[str, Path]:
    """Dotted module name (``ssdkit.x.y``; a package by its own name) -> file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> str:
    """The layer of ``ssdkit.<name>`` by the longest matching TABLE entry; KeyError if none."""
    name = module.removeprefix("ssdkit.")
    if name in TABLE:
        return TABLE[name]
    prefixes = [p for p in TABLE if p.endswith(".") and name.startswith(p)]
    if not prefixes:
        raise KeyError(module)
    return TABLE[max(prefixes, key=len)]


def _target(module: str, name: str) -> str | None:
    """The ssdkit module an import of `name` loads (the longest existing prefix), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> list[tuple[str, int, str]]:
    """(imported ssdkit module, line, imported names) for every import statement of `module`,
    function-level ones included. ``from pkg import sub`` counts as importing pkg.sub."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (t := _target(module, alias.name)) is not None:
                    out.append((t, node.lineno, ""))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                t = _target(module, full if full in MODULES else base)
                if t is not None:
                    out.append((t, node.lineno, alias.name))
    return [(t, line, names) for t, line, names in out if t.startswith("ssdkit") and t != module]


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for t, _, name in imports_of(m):
            if t == "ssdkit" and name == "__version__":
                continue  # a constant of the package, set before any submodule loads
            graph[m].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(_cycle_path(graph, set(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _cycle_path(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """One concrete cycle a -> b -> ... -> a inside a strongly connected component."""
    start = min(comp)
    path, seen = [start], {start}
    while True:
        nxt = min(w for w in graph[path[-1]] if w in comp)
        if nxt in seen:
            return path[path.index(nxt) :] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m != "ssdkit" and _layer_or_none(m) is None]
    assert not missing, f"modules with no layer in tests/test_layers.py TABLE (add them): {missing}"


def _layer_or_none(module: str) -> str | None:
    try:
        return layer_of(module)
    except KeyError:
        return None


def test_no_import_cycles():
    cycles = _cycles(_edges())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_layers():
    wrong = []
    for m in MODULES:
        if m == "ssdkit":
            continue  # the package's __init__ gathers the public surface
        here = LAYERS.index(layer_of(m))
        for t, line, name in imports_of(m):
            if t == "ssdkit":
                if name != "__version__":
                    wrong.append(f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports the package root ({name})")
                continue
            there = LAYERS.index(layer_of(t))
            if there > here:
                wrong.append(
                    f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}: {m} ({LAYERS[here]}) imports {t} ({LAYERS[there]})"
                )
    assert not wrong, "imports that point up a layer (move the code down, or the importer up):\n" + "\n".join(wrong)


# The checker itself, on made-up graphs: a test that could not fail would prove nothing.


def test_cycle_finder_reports_a_cycle_as_a_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_layer_lookup_prefers_the_longest_entry():
    assert layer_of("ssdkit.io.tfod.graphdef") == "upper"
    assert layer_of("ssdkit.io.weights") == "foundation"
    assert layer_of("ssdkit.config.run") == "foundation"
    assert layer_of("ssdkit.postprocess.nms") == "components"
    assert layer_of("ssdkit.cli.eval") == "cli"
    with pytest.raises(KeyError):
        layer_of("ssdkit.not_in_the_table")


def test_imports_are_read_inside_functions_and_relative_ones_resolved():
    # ssdkit.io.pretrained imports ssdkit.io.convert inside a function only.
    assert "ssdkit.io.convert" in {t for t, _, _ in imports_of("ssdkit.io.pretrained")}
    assert "ssdkit.engine.trainer" in {t for t, _, _ in imports_of("ssdkit.cli.train")}


def _drawn_layers() -> dict[str, str]:
    """docs/architecture.md's layer drawing: layer -> the text of its lines."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = page.split("## Layers", 1)[1].split("```", 2)[1]
    text: dict[str, str] = {}
    layer = None
    for line in drawing.splitlines():
        first = line.split()[0] if line.split() else ""
        layer = first if first in LAYERS else layer
        if layer is not None:
            text[layer] = text.get(layer, "") + " " + line
    return text


def test_the_architecture_page_draws_the_layers_of_the_table():
    drawn = _drawn_layers()
    assert set(drawn) == set(LAYERS), sorted(drawn)
    missing = []
    for name, layer in TABLE.items():
        shown = name.rstrip(".").replace(".", "/")  # io.paths -> io/paths; a package by its folder
        words = [word.strip(",:") for word in drawn[layer].split()]
        if not any(w.rstrip("/") == shown or w.startswith(shown + "/") for w in words):
            missing.append(f"{shown} ({layer})")
    assert not missing, f"docs/architecture.md does not draw these in their layer: {missing}"
