"""What `import ssdkit` promises: every name in `__all__` resolves, and the heavy parts load lazily."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import ssdkit


def test_every_exported_name_resolves():
    for name in ssdkit.__all__:
        assert getattr(ssdkit, name) is not None, name
    from ssdkit.evaluation import evaluate

    assert ssdkit.evaluate is evaluate
    assert callable(ssdkit.train)


def test_import_ssdkit_does_not_load_the_trainer_metrics_or_export():
    code = (
        "import sys, ssdkit; "
        "print(sorted(m for m in ('ssdkit.engine', 'ssdkit.evaluation', 'ssdkit.export', 'onnx', 'matplotlib', "
        "'pycocotools') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _fresh(code: str) -> str:
    """stdout of `code` run in a new interpreter (nothing of ssdkit imported before)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def _package_dirs() -> list[str]:
    root = Path(ssdkit.__file__).parent
    return sorted(p.name for p in root.iterdir() if (p / "__init__.py").is_file())


def test_every_subpackage_is_an_attribute_after_a_bare_import():
    names = _package_dirs()
    assert {"analysis", "cli", "config", "engine", "evaluation", "export", "io", "runtime", "data"} <= set(names)
    # Each attribute is dropped from the module first, so that every name goes through the lazy lookup
    # and none passes only because an earlier one happened to import it.
    code = (
        "import sys, ssdkit\n"
        "print(type(ssdkit.export.to_onnx).__name__, type(ssdkit.analysis).__name__)\n"
        f"for name in {names!r}:\n"
        "    ssdkit.__dict__.pop(name, None)\n"
        "    mod = getattr(ssdkit, name)\n"
        "    assert mod is sys.modules['ssdkit.' + name], name\n"
        "print('ok')\n"
    )
    assert _fresh(code).split() == ["function", "module", "ok"]


def test_dir_lists_all_of_all_before_any_lazy_name_is_used():
    code = "import ssdkit; d = dir(ssdkit); print(sorted(set(ssdkit.__all__) - set(d))); print('train' in d, 'evaluate' in d)"
    assert _fresh(code).split("\n")[:2] == ["[]", "True True"]
    assert set(_package_dirs()) <= set(ssdkit.__all__)


def test_train_and_evaluate_are_plain_functions():
    from ssdkit.engine.trainer import train
    from ssdkit.evaluation.evaluate import evaluate

    assert inspect.isfunction(ssdkit.train) and ssdkit.train is train
    assert inspect.isfunction(ssdkit.evaluate) and ssdkit.evaluate is evaluate
    assert "train" in ssdkit.__all__ and "evaluate" in ssdkit.__all__


def test_weights_functions_and_run_config_are_exported():
    from ssdkit.config.run import RunConfig
    from ssdkit.io.weights import load_weights, save_weights

    assert ssdkit.load_weights is load_weights
    assert ssdkit.save_weights is save_weights
    assert ssdkit.RunConfig is RunConfig
    assert {"load_weights", "save_weights", "RunConfig"} <= set(ssdkit.__all__)


def test_an_unknown_attribute_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="'ssdkit' has no attribute 'metrics'"):
        ssdkit.metrics  # noqa: B018 (moved to ssdkit.evaluation.metrics)
