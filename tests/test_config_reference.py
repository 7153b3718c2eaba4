"""docs/config-reference.md is generated from the configs' schemas and must match the code."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from pydantic import Field

import ssdkit
from ssdkit import registry

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "config-reference.md"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "scripts" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.DISABLE_ENV, "1")


@pytest.fixture(scope="module")
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def test_committed_page_is_up_to_date(page: str) -> None:
    _, why = gen.run_part()
    note = f" (ssdkit.engine did not import: {why})" if why else ""
    assert gen.generate() == page, (
        f"docs/config-reference.md is stale: run python scripts/gen_config_reference.py{note}"
    )


def test_check_flag_reports_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    copy = tmp_path / "config-reference.md"
    copy.write_text(gen.generate(), encoding="utf-8")
    monkeypatch.setattr(gen, "PAGE", copy)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 0
    copy.write_text(copy.read_text(encoding="utf-8").replace("iou_threshold", "iou_thresh", 1), encoding="utf-8")
    assert gen.main(["--check"]) == 1
    assert "is stale: run python scripts/gen_config_reference.py" in capsys.readouterr().err


def _section(page: str, heading: str) -> str:
    """Text from a heading line to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = page.index(f"\n{heading}\n")
    nxt = re.compile(rf"\n#{{1,{len(level)}}} ")
    end = nxt.search(page, start + 1)
    return page[start : end.start() if end else len(page)]


def _rows(section: str) -> dict[str, list[str]]:
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `(\w+)` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", m.group(2))]
    return rows


def _json_default(info) -> str | None:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        return None
    return "`" + json.dumps(info.default if not isinstance(info.default, tuple) else list(info.default)) + "`"


@pytest.mark.parametrize("role", sorted(registry.ALL_REGISTRIES))
def test_every_builtin_type_and_field_is_listed_with_its_default(page: str, role: str) -> None:
    reg = registry.ALL_REGISTRIES[role]
    builtin = [n for n, e in reg._entries.items() if e.obj.__module__.startswith("ssdkit.")]
    assert builtin, f"no built-in {role}"
    for name in builtin:
        rows = _rows(_section(page, f"#### `{role}: {{type: {name}}}`"))
        cfg_cls = reg.config_class(name)
        assert set(rows) == set(cfg_cls.model_fields) - {"type"}, f"{role} {name}"
        for field, info in cfg_cls.model_fields.items():
            if field == "type":
                continue
            expected = _json_default(info)
            if expected is not None:
                assert rows[field][1] == expected, f"{role} {name}.{field}: {rows[field]}"
            if info.description:
                assert rows[field][3] == info.description.replace("|", "\\|"), f"{role} {name}.{field}"


def test_top_level_defaults_come_from_ssdconfig(page: str) -> None:
    rows = _rows(_section(page, "## Model: `ssdkit.SSDConfig`"))
    assert rows["num_classes"][1] == "**required**"
    assert rows["backbone"][1] == "**required**" and rows["priors"][1] == "**required**"
    # a config without these fields gets these components
    cfg = ssdkit.presets.get("ssd300_vgg16").model_dump()
    for field in ("head", "matcher", "box_coder", "loss", "postprocess"):
        cfg.pop(field)
    built = ssdkit.SSDConfig.model_validate(cfg)
    for field in ("head", "matcher", "box_coder", "loss", "postprocess"):
        assert rows[field][1] == f"`{{type: {getattr(built, field).type}}}`", field


def test_constraints_are_shown(page: str) -> None:
    priors = _rows(_section(page, "#### `priors: {type: ssd}`"))
    assert priors["offset"][2] == ">= 0; <= 1"
    assert priors["aspect_ratios"][2] == "at least 1 item; each: > 0"
    matcher = _rows(_section(page, "#### `matcher: {type: ssd}`"))
    assert matcher["iou_threshold"][2] == "> 0; < 1"
    assert _rows(_section(page, "### preprocess"))["channel_order"][0] == '"RGB" \\| "BGR"'


def test_components_registered_at_run_time_are_left_out() -> None:
    before = gen.generate()

    class TempMatcherConfig(registry.ComponentConfig):
        type: str = "temp_matcher"
        knob: float = Field(1.0, description="a knob of a test-only matcher")

    @registry.MATCHERS.register("temp_matcher", config=TempMatcherConfig)
    class TempMatcher:
        def __init__(self, knob: float = 1.0) -> None:
            self.knob = knob

    try:
        mapping = ssdkit.SSDConfig.model_json_schema()["properties"]["matcher"]["discriminator"]["mapping"]
        assert "temp_matcher" in mapping  # the schema has it; the page must not
        assert gen.generate() == before
    finally:
        registry.MATCHERS.unregister("temp_matcher")


def _anchor(heading: str) -> str:
    kept = "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def test_internal_links_point_at_headings(page: str) -> None:
    anchors = {_anchor(line.lstrip("#").strip()) for line in page.splitlines() if line.startswith("#")}
    links = set(re.findall(r"\]\(#([^)]+)\)", page))
    assert links, "the page links its sections"
    assert links <= anchors, sorted(links - anchors)


def test_figures_linked_from_the_docs_exist() -> None:
    docs = ROOT / "docs"
    for md in docs.glob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md.read_text(encoding="utf-8")):
            assert (docs / target).is_file(), f"{md.name} shows {target}, which does not exist"


def test_tests_named_in_the_docs_exist() -> None:
    """The docs cite tests by name as evidence; a renamed or deleted test must not leave a dangling claim."""
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):  # tests mirror the package: tests/<package>/
        defined |= set(re.findall(r"^def (test_\w+)\(", path.read_text(encoding="utf-8"), re.M))
    cited = set()
    for md in (ROOT / "docs").glob("*.md"):
        cited |= set(re.findall(r"`(test_\w+)`", md.read_text(encoding="utf-8")))
    assert cited, "the docs cite tests"
    assert cited <= defined, sorted(cited - defined)
