"""What `import ssdkit` promises: every name in `__all__` resolves, and the heavy parts load lazily."""

from __future__ import annotations

import subprocess
import sys

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
